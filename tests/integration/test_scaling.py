"""Scaling under load on Apache Kafka: routers and stage workers added and removed while requests
keep coming, every request answered exactly once.

Requests are produced at a steady pace from a thread for the whole run. A second router and a
second stage worker join; the first router and the first stage worker are stopped with SIGTERM
(they drain and exit 0); a third router joins; the load goes on until a request sent after the
last change is answered. Every rebalance moves ingress partitions between routers with the
requests they hold: the routers consume the ingress and the reply inbox in one group with the
range assignor, so each instance holds partition p of both or neither, and a request's replies
(sent to inbox partition p) come back to the instance that holds its state. The test checks it
twice: every assignment a router logs pairs the same partition numbers of both topics, and every
request is answered once, with no router failing. With graceful stops and rebalances nothing is
redone after its result went out, so at least once gives no duplicate either.

It runs on the session's broker in the Apache Kafka pass (``make test-kafka``): rebalances are
the group coordinator's work, which one node does as a cluster would, and the session's node is
already paid for. The embedded pass skips it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.integration.conftest import broker_engine
from tests.support.stage import StageProcess
from tests.support.two_stage import Pipeline, SteadyLoad, stop_all, write_repository

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        broker_engine() != "kafka",
        reason="scaling and rebalances are tested on Apache Kafka (MODELYARD_TEST_BROKER=kafka, "
        "make test-kafka)",
    ),
]

PARTITIONS = 4  # of the pipeline's topics: 2, 2 or 2, 1, 1 per router as they come and go
PER_TICK = 10  # requests every 0.1 s: 100 a second, for as long as the changes take


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(Path(tmp_path_factory.mktemp("models")))


@pytest.fixture(params=[False, True], ids=["at-least-once", "exactly-once"])
def pipeline(
    request: pytest.FixtureRequest, broker: str, repository: Path, tmp_path: Path
) -> Pipeline:
    return Pipeline(broker, repository, tmp_path, exactly_once=request.param,
                    partitions=PARTITIONS)  # fmt: skip


def test_routers_and_workers_come_and_go_under_load(pipeline: Pipeline) -> None:
    pipeline.roll_out()
    stages, routers = [pipeline.stage("stage-1")], [pipeline.router("router-1")]
    every_router = list(routers)
    results = pipeline.results()
    sent_at: list[tuple[str, int]] = []
    try:
        with SteadyLoad(pipeline, per_tick=PER_TICK) as load:

            def changed(what: str) -> None:
                sent_at.append((what, load.sent))
                load.wait_beyond(load.sent)  # the next change is made under load too, even
                # after a change quicker than a tick (a worker with nothing in flight stops so)

            results.until(lambda m: len(m) >= 100, 90)  # serving
            routers.append(pipeline.router("router-2"))
            changed("router 2 joined")
            stages.append(pipeline.stage("stage-2"))
            changed("stage worker 2 joined")
            stop_all([routers.pop(0)])
            changed("router 1 stopped")
            stop_all([stages.pop(0)])
            changed("stage worker 1 stopped")
            routers.append(pipeline.router("router-3"))
            changed("router 3 joined")
            every_router += routers[-2:]
            later = f"r-{load.sent}".encode()  # sent after the last change
            results.until(lambda m: any(x.key() == later for x in m), 120)
        pipeline.all_answered(results, [*routers, *stages])
    finally:
        results.close()
        stop_all([*routers, *stages])
    tally = pipeline.tally()
    print(tally.row(f"routers 1, 2, 1, 2 and stage workers 1, 2, 1 ({pipeline.mode})"))
    print(", ".join(f"{what} at {sent} sent" for what, sent in sent_at))
    assert [sent for _, sent in sent_at] == sorted({sent for _, sent in sent_at})  # under load
    assert tally.sent > sent_at[-1][1]
    assert tally.lost == 0, tally
    assert tally.duplicated == 0, tally
    for router in every_router:
        assignments = _assignments(router, pipeline)
        assert assignments, "\n".join(router.lines[-20:])
        for ingress, inbox in assignments:
            assert ingress == inbox, f"ingress partitions {ingress}, inbox partitions {inbox}"


def _assignments(router: StageProcess, pipeline: Pipeline) -> list[tuple[list[int], list[int]]]:
    """(ingress partitions, inbox partitions) of every assignment the router's loop logged."""
    found: list[tuple[list[int], list[int]]] = []
    for line in router.lines:
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("event") == "partitions assigned" and "worker" in record:
            found.append((_numbers(record["partitions"], pipeline.ingress),
                           _numbers(record["partitions"], pipeline.inbox)))  # fmt: skip
    return found


def _numbers(partitions: Sequence[tuple[str, int]], topic: str) -> list[int]:
    return sorted(p for name, p in partitions if name == topic)
