"""The control topic compacted for real (Apache Kafka): a router that starts after compaction
converges to the state of one that watched every change, and nothing it reads is misreported.

The topic is set to roll a segment per record and clean at once, so Kafka's log cleaner (every
15 s by default) removes every record that a later record of its pipeline replaced, except in
the active segment. The last records of two pipelines are a router's guard retreats, signed by
a writer key: what a reader that never saw the operator's record under them must still apply.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from modelyard.broker.admin import admin_client
from modelyard.control import (
    CanaryChange,
    Change,
    ControlRecord,
    ControlState,
    GuardRule,
    GuardsChange,
    Promote,
    ReleaseRollback,
    ReleaseSave,
    Rollback,
    Rollout,
    ShadowChange,
    Withdraw,
)
from modelyard.control.topic import (
    ControlFollower,
    ensure_control_topic,
    read_records,
    write_change,
)
from modelyard.keys import SigningKey
from modelyard.topics import control_topic

from tests.integration.conftest import broker_engine
from tests.support.keys import admin, verifier, writer
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        broker_engine() != "kafka",
        reason="the embedded broker never compacts (MODELYARD_TEST_BROKER=kafka, make test-kafka)",
    ),
]

PIPELINES = ("docs", "chat", "images")
# a segment per record (each is rolled at the next append) and every closed one cleanable at once
FAST_COMPACTION = {
    "segment.ms": "1",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "1",
}
GUARDS = GuardsChange(stage="a", rules=(GuardRule(metric="error_rate", max=0.5),))


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def _compact_quickly(broker: str, topic: str) -> None:
    entries = [ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
               for name, value in FAST_COMPACTION.items()]  # fmt: skip
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
    admin = admin_client(broker)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def _operator_changes(round_: int) -> list[Change]:
    """One round of an operator's work on a pipeline with stages a and b (versions n..n+2)."""
    n = 3 * round_ + 1
    return [
        Rollout(stage="a", version=str(n)),
        Rollout(stage="b", version=str(n)),
        Rollout(stage="a", version=str(n + 1)),
        ReleaseSave(release=f"r{round_}"),
        Rollout(stage="b", version=str(n + 1)),
        CanaryChange(stage="a", version=str(n + 2), weight=0.25),
        Promote(stage="a"),
        ShadowChange(stage="b", version=str(n + 2), sample_rate=0.5),
        Rollback(stage="a"),
        ReleaseRollback(release=f"r{round_}"),
        ShadowChange(stage="b", version=None),
    ]


def _guard_retreats(n: int) -> list[tuple[SigningKey, Change]]:
    """An operator sets a canary and a shadow on guarded stage a; a router's guard takes both
    away, in two records signed by its writer key (the last records of the pipeline)."""
    router = writer()
    return [
        (admin(), CanaryChange(stage="a", version=str(n), weight=0.1)),
        (admin(), ShadowChange(stage="a", version=str(n + 1), sample_rate=1.0)),
        (router, Withdraw(stage="a", version=str(n + 1))),
        (router, CanaryChange(stage="a", version=None)),
    ]


def _script() -> list[tuple[str, SigningKey, Change]]:
    """Every change the test writes, in order: rounds of operator work on each pipeline, guard
    retreats last on chat and images, then more docs changes so those close their segments."""
    steps: list[tuple[str, SigningKey, Change]] = []
    for round_ in range(3):
        for pipeline in PIPELINES:
            steps += [(pipeline, admin(), change) for change in _operator_changes(round_)]
    for pipeline in PIPELINES:
        steps.append((pipeline, admin(), GUARDS))
    for pipeline in ("chat", "images"):
        steps += [(pipeline, key, change) for key, change in _guard_retreats(10)]
    steps += [("docs", admin(), change) for change in _operator_changes(3)]
    return steps


def test_a_router_started_after_compaction_converges_to_the_one_that_watched(
    broker: str, unique: str
) -> None:
    topic = control_topic(unique)
    ensure_control_topic(broker, unique)
    _compact_quickly(broker, topic)
    keyring = verifier()
    written: list[ControlRecord] = []
    with ControlFollower(broker, prefix=unique, verifier=keyring) as watcher:
        for pipeline, key, change in _script():
            written.append(write_change(broker, pipeline, change, signer=key, verifier=keyring,
                                        prefix=unique))  # fmt: skip
        last = {r.key: r.seq for r in written}
        assert watcher.wait_until(lambda s: {p: s.pipeline(p).seq for p in PIPELINES} == last, 30)
        watched = watcher.state
        assert watcher.rejected == ()

    # the truth: each pipeline's last written record; routers that watched hold exactly it
    assert watched == ControlState.from_records(written)
    for pipeline in ("chat", "images"):
        stage = watched.stage(pipeline, "a")
        assert (stage.canary, stage.shadow, stage.guards) == (None, None, GUARDS.rules)

    # compaction really ran: all that is left of chat and images is the guard's last record
    # (nothing under it to read), records are gone and the offsets have gaps
    def guarded_left() -> dict[str, list[tuple[int, str]]]:
        kept = read_records(broker, prefix=unique)
        return {p: [(r.record.seq, r.record.actor) for r in kept if r.record.key == p]
                for p in ("chat", "images")}  # fmt: skip

    alone = {p: [(last[p], writer().name)] for p in ("chat", "images")}
    wait_until(lambda: guarded_left() == alone, "the log cleaner to compact the control topic",
               timeout_s=120)  # fmt: skip
    offsets = [p.offset for p in read_records(broker, prefix=unique)]
    assert len(offsets) < len(written)
    assert offsets != list(range(offsets[0], offsets[0] + len(offsets)))

    # a router started now reads only what compaction kept, and reaches the same state
    with ControlFollower(broker, prefix=unique, verifier=keyring) as fresh:
        assert fresh.wait_caught_up(30)
        assert fresh.rejected == ()
        assert fresh.state == watched

    # history: nothing is misreported as rejected or lost; what compaction removed is said
    history = read_records(broker, prefix=unique, verifier=keyring)
    assert [p.offset for p in history] == offsets
    assert all(p.applied and p.rejected is None for p in history)
    first = {p.record.key: p for p in reversed(history)}
    for pipeline in PIPELINES:
        assert first[pipeline].compacted == first[pipeline].record.seq - 1
