"""`modelyard monitor` under faults, against the real broker: two instances sharing the audit
topic's partitions through a join and a leave count every hop exactly once; a monitor SIGKILLed
mid-stream and restarted loses nothing and over-counts within a bound: the hops of a partition
since its last offset commit (a loose one: the counted offset in the changelog skips most of
those; docs/monitor.md, Delivery)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from modelyard.audit import encode_audit_values
from modelyard.broker.admin import create_topics
from modelyard.monitor.hops import WindowKey
from modelyard.monitor.settings import monitor_group, monitor_topic
from modelyard.monitor.show import read_records, read_summaries
from modelyard.monitor.summary import WindowSummary, combine
from modelyard.monitor.windows import window_start
from modelyard.topics import audit_topic

from tests.support.cli_process import CliProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

KEYS = (
    WindowKey("docs", "ocr", "tesseract", "1", "active"),
    WindowKey("docs", "sentiment", "vader", "1", "active"),
    WindowKey("docs", "sentiment", "vader", "2", "canary"),
)
MARKER = WindowKey("docs", "marker", "none", "0", "active")  # the last hop of each partition
Partial = tuple[WindowKey, float, str]  # a window of one source partition


def _monitor(broker: str, prefix: str, state: Path) -> CliProcess:
    """``modelyard monitor`` in a child process, ticking fast, its state in ``state``."""
    env = {**os.environ, "MODELYARD_STATE_DIR": str(state), "MODELYARD_TICK_S": "0.5",
           "MODELYARD_SESSION_TIMEOUT_S": "6"}  # fmt: skip
    args = ["monitor", "--bootstrap", broker, "--topic-prefix", prefix]
    return CliProcess(args, "modelyard monitor ready", env)


def _hop(key: WindowKey, n: int, t: float) -> bytes:
    """Hop ``n`` of ``key``, finished at ``t``; every seventh is a deadline error."""
    outcome = "deadline" if n % 7 == 3 else "ok"
    return encode_audit_values("hop", {
        "request_id": f"r{n}", "pipeline": key.pipeline, "outcome": outcome, "stage": key.stage,
        "model": key.model, "version": key.version, "role": key.role, "shadow": False,
        "dispatched_at": t - 0.02, "finished_at": t, "latency_ms": 20.0, "input_digest": "00",
    })  # fmt: skip


def _values(start: float, first: int, count: int, partitions: int) -> list[tuple[int, bytes]]:
    """(partition, value) of hops ``first..first+count`` in the window at ``start``: key
    ``n % 3``, partition ``n % partitions``."""
    values = []
    for n in range(first, first + count):
        values.append((n % partitions, _hop(KEYS[n % 3], n, start + (n % 590) / 10)))
    return values


def _send(producer: Producer, topic: str, values: list[tuple[int, bytes]]) -> None:
    for partition, value in values:
        producer.produce(topic, value, partition=partition)
        producer.poll(0)


def _produce(broker: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    _send(producer, topic, values)
    assert producer.flush(30) == 0


class Offsets:
    """The monitor group's committed offsets on the audit topic, and its table's changelog."""

    def __init__(self, broker: str, prefix: str, partitions: int) -> None:
        self._consumer = Consumer({"bootstrap.servers": broker, "group.id": monitor_group(prefix)})
        self._parts = [TopicPartition(audit_topic(prefix), p) for p in range(partitions)]
        # faust names a table's changelog <app id>-<table>-changelog; as many partitions
        changelog = f"{monitor_group(prefix)}-windows-changelog"
        self._changelog = [TopicPartition(changelog, p) for p in range(partitions)]

    def committed(self) -> list[int]:
        return [max(tp.offset, 0) for tp in self._consumer.committed(self._parts, timeout=10)]

    def reached(self, ends: list[int]) -> bool:
        """Every partition's committed offset is its end (what was produced to it: the embedded
        broker's watermarks are at batch granularity): each partition is being consumed."""
        return self.committed() == ends

    def changelog(self) -> int:
        """The changelog's watermarks, summed: they grow as windows are written."""
        ends = (self._consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self._changelog)
        return sum(ends)

    def close(self) -> None:
        self._consumer.close()


@contextmanager
def _offsets(broker: str, prefix: str, partitions: int) -> Iterator[Offsets]:
    offsets = Offsets(broker, prefix, partitions)
    try:
        yield offsets
    finally:
        offsets.close()


@contextmanager
def _running(broker: str, prefix: str, state: Path) -> Iterator[CliProcess]:
    """A monitor, ended with SIGTERM (if still running) however the block ends."""
    monitor = _monitor(broker, prefix, state)
    try:
        yield monitor
    finally:
        monitor.end(signal.SIGTERM)


def _windows(broker: str, prefix: str) -> dict[WindowKey, WindowSummary]:
    combined = combine(read_summaries(broker, monitor_topic(prefix), timeout_s=5))
    return {w.key: w for w in combined}


def _counts(broker: str, prefix: str) -> dict[WindowKey, tuple[int, dict[str, int]]]:
    return {k: (w.stats.requests, w.stats.errors) for k, w in _windows(broker, prefix).items()}


def _partials(broker: str, prefix: str) -> dict[Partial, int]:
    """Requests of the latest revision of every (key, start, source) published."""
    latest: dict[Partial, tuple[int, int]] = {}
    for part in read_summaries(broker, monitor_topic(prefix), timeout_s=5):
        for source, revision in part.sources.items():
            wid = (part.key, part.start, source)
            if latest.get(wid, (-1, 0))[0] <= revision:
                latest[wid] = (revision, part.stats.requests)
    return {wid: requests for wid, (_, requests) in latest.items()}


def _mark_the_end(broker: str, prefix: str, start: float, offsets: Offsets,
                  ends: list[int], monitor: CliProcess | None = None) -> None:  # fmt: skip
    """Produce a marker hop (in the window after ``start``'s) to every partition, whose ends
    are ``ends``, and wait until each is consumed and its summary published: the final figures
    of that partition's windows are published by then (a tick publishes every due window of a
    partition, oldest first, and the marker's is the newest)."""
    topic, partitions = audit_topic(prefix), len(ends)
    _produce(broker, topic, [(p, _hop(MARKER, 7 * p, start + 61)) for p in range(partitions)])
    target = [n + 1 for n in ends]
    if monitor is None:
        wait_until(lambda: offsets.reached(target), "every hop consumed", 60)
    else:
        _wait_for_commits(offsets, target, "every hop consumed", 60, monitor,
                          since="the markers", done=lambda c: c == target)  # fmt: skip
    sources = {f"{topic}/{p}" for p in range(partitions)}
    wait_until(lambda: {s for (k, _, s) in _partials(broker, prefix) if k == MARKER} == sources,
               "each partition's marker published", 30)  # fmt: skip


# a clean rebalance -------------------------------------------------------------------------
@pytest.mark.slow
def test_two_monitors_share_partitions_through_a_join_and_a_leave(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A runs alone, B joins (a rebalance), B is stopped with SIGTERM (a rebalance back); after
    each step every partition is consumed to its end, and the combined windows hold every hop
    once: revoked partitions are committed and their windows handed over in the changelog."""
    topic = audit_topic(unique)
    create_topics(broker, [topic], partitions=4)
    start = window_start(time.time(), 60) - 120  # a closed minute: emitted at once
    with ExitStack() as stack:
        offsets = stack.enter_context(_offsets(broker, unique, 4))
        _produce(broker, topic, _values(start, 0, 400, 4))
        a = stack.enter_context(_running(broker, unique, tmp_path / "a"))
        a.wait_ready(60)
        wait_until(lambda: offsets.reached([100] * 4), "A consumed every partition", 60)
        b = stack.enter_context(_running(broker, unique, tmp_path / "b"))
        b.wait_ready(90)  # ready: B holds partitions, its share of the table recovered
        _produce(broker, topic, _values(start, 400, 400, 4))
        wait_until(lambda: offsets.reached([200] * 4), "A and B consumed each partition", 60)
        assert b.end(signal.SIGTERM) == 0, "".join(b.lines[-30:])
        _produce(broker, topic, _values(start, 800, 400, 4))
        wait_until(lambda: offsets.reached([300] * 4), "A took every partition back", 60)
        _mark_the_end(broker, unique, start, offsets, [300] * 4)
        counts = _counts(broker, unique)
        assert counts == _expected_counts(), _by_source(broker, unique, [a, b])
        assert a.end(signal.SIGTERM) == 0, "".join(a.lines[-30:])
    assert _counts(broker, unique) == _expected_counts()  # and nothing revised it since


def _by_source(broker: str, prefix: str, monitors: list[CliProcess]) -> str:
    """What a failed count needs to be explained: every summary of each (key, source) in the
    order published (revision:requests@emitted), and the monitors' last lines."""
    series: dict[tuple[str, str], list[str]] = {}
    for record in read_records(broker, monitor_topic(prefix), timeout_s=5):
        if record.get("kind") == "window" and record.get("stage") != MARKER.stage:
            name = (f"{record['stage']}/{record['version']}", str(record["source"])[-1:])
            when = str(record["emitted_at"])[11:22]
            series.setdefault(name, []).append(f"{record['revision']}:{record['requests']}@{when}")
    lines = [f"{k}: {' '.join(v)}" for k, v in sorted(series.items())]
    logs = "".join(f"--- monitor {i}\n" + "".join(m.lines[-40:]) for i, m in enumerate(monitors))
    return "\n".join(lines) + "\n" + logs


def _expected_counts() -> dict[WindowKey, tuple[int, dict[str, int]]]:
    """Hops 0..1199, key ``n % 3``: 400 each; a deadline where ``n % 7 == 3``: n = 3 + 7 j,
    j < 171, of key ``j % 3``: 57 each. The markers: one hop per partition, no deadline."""
    return {**dict.fromkeys(KEYS, (400, {"deadline": 57})), MARKER: (4, {})}


# SIGKILL mid-stream ------------------------------------------------------------------------
class Stream:
    """Hops produced continuously by a thread (20 every 50 ms: ~400/s) until the block ends."""

    def __init__(self, broker: str, topic: str, start: float, partitions: int) -> None:
        self.topic, self.start, self.partitions = topic, start, partitions
        self.sent = 0
        self._producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hop-stream")

    def _run(self) -> None:
        while not self._stop.wait(0.05):  # the pace of the stream, not a wait for a condition
            first, self.sent = self.sent, self.sent + 20  # counted first: ends() is never short
            _send(self._producer, self.topic, _values(self.start, first, 20, self.partitions))

    def ends(self) -> list[int]:
        """At least each partition's end offset: the hops handed to the producer so far."""
        return [self.sent // self.partitions] * self.partitions

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self._producer.flush(30) == 0


def _kill_between_write_and_commit(monitor: CliProcess, offsets: Offsets) -> None:
    """SIGKILL once a commit was seen and the changelog grew since: windows written whose
    offsets are not committed (best effort: a commit may land between the look and the kill;
    the bound holds either way)."""
    last, at_commit = offsets.committed(), -1  # the changelog's end when ``last`` was seen

    def written_since_commit() -> bool:
        nonlocal last, at_commit
        committed, changelog = offsets.committed(), offsets.changelog()
        if committed != last:
            last, at_commit = committed, changelog
            return False
        return 0 <= at_commit < changelog

    wait_until(written_since_commit, "a changelog write after an offset commit", 60)
    assert monitor.end(signal.SIGKILL) == -signal.SIGKILL


@pytest.mark.slow
def test_a_monitor_killed_mid_stream_over_counts_within_the_stated_bound(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """Hops flow (~400/s) while a monitor runs; it is SIGKILLed between a changelog write and
    an offset commit and restarted while they still flow; then a marker hop on every partition
    tells when the final figures are published.

    The bound: a restarted monitor restores its windows and counted offsets from the changelog
    (the hops counted before the kill) and re-reads from the last committed offset, so a window
    of partition p over-counts by at most the hops of p since that commit (in fact by one batch
    at most: the re-read below the counted offset is skipped). Observed: the hops of
    key k at offsets [committed_p, end_p) of p, committed_p the group's offset after the kill,
    end_p p's end just after the kill (the killed monitor read nothing past it). For every
    (window, partition): true <= counted <= true + that."""
    topic, partitions = audit_topic(unique), 2
    create_topics(broker, [topic], partitions=partitions)
    start = window_start(time.time(), 60) - 180
    with ExitStack() as stack:
        offsets = stack.enter_context(_offsets(broker, unique, partitions))
        with Stream(broker, topic, start, partitions) as stream:
            first = stack.enter_context(_running(broker, unique, tmp_path))
            first.wait_ready(60)
            _kill_between_write_and_commit(first, offsets)
            committed, ends = offsets.committed(), stream.ends()
            second = stack.enter_context(_running(broker, unique, tmp_path))
            second.wait_ready(90)
            # a join waits out the killed member's session, then the tables are restored
            _wait_for_commits(offsets, ends, "the restart past the kill", 120, second,
                              since="the kill", done=lambda c: _past(c, ends),
                              before=committed)  # fmt: skip
        _mark_the_end(broker, unique, start, offsets, stream.ends(), second)
        published = _partials(broker, unique)
        assert second.end(signal.SIGTERM) == 0, "".join(second.lines[-30:])
    truth = _truth(broker, topic, partitions)
    for p, keys in truth.items():
        true, bound = Counter(keys), Counter(keys[committed[p] : ends[p]])
        for key in KEYS:
            got = published.get((key, start, f"{topic}/{p}"), 0)
            assert 0 <= got - true[key] <= bound[key], (
                p, key, got, true[key], bound[key],
                [line for line in second.lines if "ssign" in line or "evok" in line],
            )  # fmt: skip


_FAUST_STUCK = (
    "known, not fixed: the restarted monitor's faust consumer never committed one partition past "
    "a point while the others went on (seen twice after the kill in full runs on the embedded "
    "broker, before the commit crawl was fixed; a crawl moves, this never did; faust can drop the "
    "records below one it handed over early, and then commits nothing of that partition again "
    "until a rebalance or restart; docs/monitor.md)"
)


def _wait_for_commits(
    offsets: Offsets,
    target: list[int],
    what: str,
    timeout_s: float,
    monitor: CliProcess,
    *,
    since: str,
    done: Callable[[list[int]], bool],
    before: list[int] | None = None,
) -> None:
    """Wait until ``done`` holds of the group's committed offsets (``before``: what they were
    at ``since``, by default now). On a timeout the known faust stall is an expected failure;
    anything else fails with the offsets, ``target`` and the monitor's last lines."""
    before = offsets.committed() if before is None else before
    try:
        wait_until(lambda: done(offsets.committed()), what, timeout_s)
    except AssertionError as exc:
        now = offsets.committed()
        if _one_partition_never_moved(before, now, target):
            pytest.xfail(_FAUST_STUCK + f" (committed {before} at {since}, {now} now)")
        raise AssertionError(f"{exc}: committed {before} at {since}, {now} now, target "
                             f"{target}; the monitor said:\n"
                             + "".join(monitor.lines[-30:])) from None  # fmt: skip


def _one_partition_never_moved(at_kill: list[int], now: list[int], ends: list[int]) -> bool:
    """The known faust stall: a partition whose committed offset has not moved at all since
    the kill, while every other is past its end at the kill."""
    stuck = [p for p, (then, c) in enumerate(zip(at_kill, now, strict=True)) if c == then]
    return len(stuck) == 1 and all(c >= e for p, (c, e) in enumerate(zip(now, ends, strict=True))
                                   if p not in stuck)  # fmt: skip


def _past(committed: list[int], ends: list[int]) -> bool:
    return all(c >= e for c, e in zip(committed, ends, strict=True))


def _truth(broker: str, topic: str, partitions: int) -> dict[int, list[WindowKey]]:
    """Each partition's hops in offset order, as the key of their window (read back)."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"{topic}-truth",
                         "enable.partition.eof": True})  # fmt: skip
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    keys: dict[int, list[WindowKey]] = {p: [] for p in range(partitions)}
    ended: set[int] = set()
    try:
        while len(ended) < partitions:
            msg = consumer.poll(1)
            if msg is not None and msg.error() is not None:
                ended.add(msg.partition())
            elif msg is not None:
                record = json.loads(msg.value())
                keys[msg.partition()].append(WindowKey(*(record[f] for f in WindowKey._fields)))
    finally:
        consumer.close()
    return keys
