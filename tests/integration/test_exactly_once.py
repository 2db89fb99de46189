"""Exactly-once results on Apache Kafka: a router, and separately a stage worker, SIGKILLed under
load. With ``--exactly-once`` no request loses its result and none gets two; without it none is
lost and the duplicates that at-least-once allows are counted (and printed: ``-s`` shows them).

Results are read ``read_committed`` (librdkafka's default): a killed worker's open transaction
is aborted when its successor takes its transactional id back, and never seen.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import broker_engine
from tests.support.two_stage import Pipeline, check, stop_all, write_repository

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        broker_engine() != "kafka",
        reason="exactly-once is tested on Apache Kafka (MODELYARD_TEST_BROKER=kafka, make "
        "test-kafka): transactions with consumer-group offsets and fencing",
    ),
]

TOTAL = 1500


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(Path(tmp_path_factory.mktemp("models")))


@pytest.fixture(params=[True, False], ids=["exactly-once", "at-least-once"])
def pipeline(
    request: pytest.FixtureRequest, broker: str, repository: Path, tmp_path: Path
) -> Pipeline:
    return Pipeline(broker, repository, tmp_path, exactly_once=request.param, total=TOTAL)


# the kills ---------------------------------------------------------------------------------
def test_a_router_killed_under_load(pipeline: Pipeline) -> None:
    pipeline.roll_out()
    stage = pipeline.stage()
    results = pipeline.results()
    first = pipeline.router()
    try:
        pipeline.send_all()
        results.until(lambda m: len(m) >= 200, 90)  # routing, and far from done
    finally:
        first.kill()  # SIGKILL
    answered_before = len({m.key() for m in results.messages})
    successor = pipeline.router()  # the same group and slot: it fences the dead one's transaction
    try:
        pipeline.all_answered(results, [successor, stage])
    finally:
        results.close()
        stop_all([successor, stage])
    assert answered_before < TOTAL  # it really died mid-stream
    check(pipeline, "router SIGKILLed", pipeline.tally())


def test_a_stage_worker_killed_under_load(pipeline: Pipeline) -> None:
    pipeline.roll_out()
    first = pipeline.stage()
    results = pipeline.results()
    router = pipeline.router()
    try:
        pipeline.send_all()
        results.until(lambda m: len(m) >= 200, 90)
    finally:
        first.kill()
    answered_before = len({m.key() for m in results.messages})
    successor = pipeline.stage()
    try:
        pipeline.all_answered(results, [router, successor])
    finally:
        results.close()
        stop_all([router, successor])
    assert answered_before < TOTAL
    tally = pipeline.tally()
    check(pipeline, "stage SIGKILLed", tally)
    if pipeline.exactly_once:  # the stage's own replies were exactly once too
        assert tally.extra_replies == 0, tally
