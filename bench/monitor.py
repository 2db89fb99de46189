"""Monitor benchmarks: audit records/s `modelyard monitor` sustains against a naive faust agent,
and how long it takes to catch up with a burst at the router's maximum audit output.

Every figure comes from one run on one embedded broker, a fresh audit topic of 4 partitions per
measurement, the records a router writes for the four-stage reference pipeline: per request 4
hop records (digests only, the default capture) and 1 request record, all 5 on one partition.

- **throughput**: N records are produced first; then the target starts as a process of its own
  and the clock runs from its group's first offset commit to its committed offsets reaching the
  end of every partition (records/s over that span; both targets commit every 0.5 s, the
  monitor's default, so either end is up to that late). Targets: ``modelyard monitor``, and
  ``naive`` (below, in this file): a minimal faust app with the monitor's faust settings, one
  agent whose every event reads the window's stats from its table, adds the hop and writes
  them back (``table[key] = json``: one changelog record per event, where the monitor writes
  one per changed window per batch).
  CPU per record: the target's utime + stime over the span. Ratio monitor / naive.
- **burst**: with the monitor running and caught up, ``ROUTER_REQ_S`` x ``RECORDS_PER_REQUEST``
  records/s (the router's maximum audit output) are produced for ``BURST_S`` seconds; the time
  from the burst's last record until the committed offsets reach the end (lag back to 0 after
  the burst: target <= 10 s) is reported, and the time from its first record.

    python -m bench.monitor [--quick]
    python -m bench.monitor naive --bootstrap HOST:PORT --topic-prefix P --partitions N
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from modelyard.audit.records import encode_hop_record, encode_request_record
from modelyard.broker import EmbeddedBroker, create_topics
from modelyard.keys import ensure_local_keys
from modelyard.monitor.settings import MonitorSettings, monitor_group
from modelyard.topics import audit_topic

from bench.procs import ServiceProcess, cpu_seconds, python_module

__all__ = ["report", "run"]

Row = tuple[str, float | None, str, bool | None]  # label, value, target, verdict (as bench.run)
PARTITIONS = 4
STAGES = ("ocr", "langid", "translate", "sentiment")
RECORDS_PER_REQUEST = len(STAGES) + 1  # the reference pipeline: 4 hops and the request
# modelyard's router on the 2-stage no-op pipeline, `make bench --only router` medians in
# docs/performance.md (2026-12-06): 2,928, 2,996 and 4,042 req/s
ROUTER_REQ_S = 3_000
BURST_S = 5.0
LAG_TARGET_S = 10.0
POLL_S = 0.1  # how often the committed offsets are read


# records -----------------------------------------------------------------------------------
def make_records(requests: int, first: int = 0, t0: float | None = None) -> list[tuple[int, bytes]]:
    """(partition, value) of ``requests`` requests' audit records, 2 ms apart from ``t0``
    (default: 3 minutes ago); 1 in 10 served by a canary version."""
    t0 = time.time() - 180 if t0 is None else t0
    out: list[tuple[int, bytes]] = []
    for i in range(first, first + requests):
        t, request_id = t0 + (i - first) * 0.002, f"req-{i:08d}"
        canary = i % 10 == 0
        for s, stage in enumerate(STAGES):
            out.append((i % PARTITIONS, _hop(request_id, stage, canary, t + s * 0.01)))
        out.append((i % PARTITIONS, _request(request_id, canary, t)))
    return out


def _hop(request_id: str, stage: str, canary: bool, t: float) -> bytes:
    return encode_hop_record(
        request_id=request_id, pipeline="docs", caller="alice", trace_id="ab" * 16,
        outcome="deadline" if request_id.endswith("7") and canary else "ok", error=None,
        stage=stage, model=stage, version="2" if canary else "1",
        role="canary" if canary else "active", shadow=False, attempt=0, span_id="cd" * 8,
        dispatched_at=t, finished_at=t + 0.008, latency_ms=8.0 + int(request_id[-2:]) / 10,
        input_digest="12" * 32, output_digest="34" * 32,
    )  # fmt: skip


def _request(request_id: str, canary: bool, t: float) -> bytes:
    return encode_request_record(
        request_id=request_id, pipeline="docs", caller="alice", trace_id="ab" * 16,
        outcome="ok", error=None, spec_version=3, received_at=t, finished_at=t + 0.05,
        latency_ms=50.0, served_by={s: f"{s}:{'2' if canary else '1'}" for s in STAGES},
        skipped=[], input_digest="12" * 32, principal="alice", auth="token",
        result=b'{"digest":"' + b"56" * 32 + b'","size":40}',
    )  # fmt: skip


def ends_of(records: list[tuple[int, bytes]]) -> list[int]:
    """Each partition's end offset once ``records`` are in a fresh topic (counted: the embedded
    broker reports its watermarks at batch granularity)."""
    ends = [0] * PARTITIONS
    for partition, _ in records:
        ends[partition] += 1
    return ends


def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes]],
            rate: float | None = None) -> tuple[float, float]:  # fmt: skip
    """Produce every record (at ``rate`` records/s, or as fast as one producer can); the times
    the first and the last were handed to the producer."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                         "queue.buffering.max.messages": 1_000_000})  # fmt: skip
    first = time.monotonic()
    for n, (partition, value) in enumerate(records):
        while rate is not None and n > (time.monotonic() - first) * rate:
            producer.poll(0.001)  # ahead of the pace
        _produce_one(producer, topic, partition, value)
    last = time.monotonic()
    assert producer.flush(60) == 0, "not every audit record was delivered"
    return first, last


def _produce_one(producer: Producer, topic: str, partition: int, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, partition=partition)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.01)


# targets -----------------------------------------------------------------------------------
class Committed:
    """A group's committed offsets on the audit topic, read from outside (no join)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        self._parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    def offsets(self) -> list[int]:
        return [max(tp.offset, 0) for tp in self._consumer.committed(self._parts, timeout=10)]

    def wait(self, done: Callable[[list[int]], bool], proc: ServiceProcess,
             timeout_s: float = 600) -> tuple[float, list[int]]:  # fmt: skip
        """Poll until ``done(offsets)``; when it was seen, and the offsets."""
        deadline = time.monotonic() + timeout_s
        while not done(offsets := self.offsets()):
            proc.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name}: committed {offsets} after {timeout_s} s")
            time.sleep(POLL_S)
        return time.monotonic(), offsets

    def close(self) -> None:
        self._consumer.close()


def start_monitor(bootstrap: str, prefix: str, work: Path) -> ServiceProcess:
    """``modelyard monitor`` with a keyring of its own, as `modelyard up` makes one."""
    state = work / f"state-{prefix}"
    state.mkdir()
    keys = ensure_local_keys(state)
    cmd = python_module("modelyard.cli.main", "monitor", "--bootstrap", bootstrap,
                        "--topic-prefix", prefix)  # fmt: skip
    env = {"MODELYARD_STATE_DIR": str(state), "MODELYARD_KEYRING": str(keys.keyring)}
    return ServiceProcess("modelyard monitor", cmd, work / f"{prefix}-monitor.log", env=env)


def start_naive(bootstrap: str, prefix: str, work: Path) -> ServiceProcess:
    cmd = python_module("bench.monitor", "naive", "--bootstrap", bootstrap, "--topic-prefix",
                        prefix, "--partitions", str(PARTITIONS), "--state", str(work))  # fmt: skip
    return ServiceProcess("naive faust agent", cmd, work / f"{prefix}-naive.log")


TARGETS: dict[str, tuple[Callable[[str, str, Path], ServiceProcess], Callable[[str], str]]] = {
    "monitor": (start_monitor, monitor_group),
    "naive": (start_naive, lambda prefix: f"{prefix}.g.naive"),
}


# measurements ------------------------------------------------------------------------------
def throughput(bootstrap: str, name: str, records: list[tuple[int, bytes]],
               work: Path) -> dict[str, float]:  # fmt: skip
    """Records/s and CPU us per record of target ``name`` over records produced first."""
    prefix = f"mb{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [audit_topic(prefix)], partitions=PARTITIONS)
    produce(bootstrap, audit_topic(prefix), records)
    start, group = TARGETS[name]
    ends = ends_of(records)
    committed = Committed(bootstrap, group(prefix), audit_topic(prefix))
    proc = start(bootstrap, prefix, work)
    try:
        t0, first = committed.wait(lambda offsets: sum(offsets) > 0, proc)
        cpu0 = cpu_seconds(proc.proc.pid)
        t1, _ = committed.wait(lambda offsets: offsets == ends, proc)
        cpu = cpu_seconds(proc.proc.pid) - cpu0
    finally:
        proc.stop()
        committed.close()
    counted = sum(ends) - sum(first)
    return {"rate": counted / (t1 - t0), "cpu_us": cpu / counted * 1e6, "counted": counted}


def burst(bootstrap: str, requests: int, work: Path) -> dict[str, float]:
    """With the monitor caught up: seconds from a burst's first record (and from its last) to
    the committed offsets at the end, the burst produced at the router's maximum audit rate."""
    prefix = f"ml{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [audit_topic(prefix)], partitions=PARTITIONS)
    warm = make_records(PARTITIONS)  # one request per partition: caught up = committed 5 each
    produce(bootstrap, audit_topic(prefix), warm)
    records = make_records(requests, first=PARTITIONS, t0=time.time())
    ends = [a + b for a, b in zip(ends_of(warm), ends_of(records), strict=True)]
    committed = Committed(bootstrap, monitor_group(prefix), audit_topic(prefix))
    proc = start_monitor(bootstrap, prefix, work)
    try:
        committed.wait(lambda offsets: offsets == ends_of(warm), proc, timeout_s=120)
        rate = ROUTER_REQ_S * RECORDS_PER_REQUEST
        first, last = produce(bootstrap, audit_topic(prefix), records, rate=rate)
        caught_up, _ = committed.wait(lambda offsets: offsets == ends, proc)
    finally:
        proc.stop()
        committed.close()
    return {"records": len(records), "produce_rate": len(records) / (last - first),
            "from_first_s": caught_up - first, "from_last_s": caught_up - last}  # fmt: skip


# run and report ----------------------------------------------------------------------------
def run(quick: bool) -> dict[str, Any]:
    requests = 10_000 if quick else 40_000  # x5 records
    burst_requests = int(ROUTER_REQ_S * (2.0 if quick else BURST_S))
    records = make_records(requests)
    results: dict[str, Any] = {"records": len(records)}
    with tempfile.TemporaryDirectory(prefix="modelyard-monitor-bench-") as tmp:
        work = Path(tmp)
        with EmbeddedBroker(log_file=work / "broker.log") as broker:
            for name in TARGETS:
                print(f"monitor: {name}, {len(records):,} records ...", flush=True)
                results[name] = throughput(broker.bootstrap, name, records, work)
            print("monitor: burst ...", flush=True)
            results["burst"] = burst(broker.bootstrap, burst_requests, work)
    return results


def report(results: dict[str, Any]) -> list[Row]:
    print(f"\nMonitor, embedded broker, {PARTITIONS} partitions, {results['records']:,} audit "
          f"records produced first (4 hops + 1 request per request)")  # fmt: skip
    print(f"{'target':<10}{'records/s':>12}{'CPU us/record':>15}")
    for name in TARGETS:
        r = results[name]
        print(f"{name:<10}{r['rate']:>12,.0f}{r['cpu_us']:>15,.1f}")
    b = results["burst"]
    print(f"burst: {b['records']:,} records at {b['produce_rate']:,.0f}/s (router max "
          f"{ROUTER_REQ_S:,} req/s x {RECORDS_PER_REQUEST}); lag back to 0 "
          f"{b['from_first_s']:.2f} s after its first record, {b['from_last_s']:.2f} s after "
          f"its last")  # fmt: skip
    print("  records/s: first offset commit -> committed at the end (both commit every 0.5 s)")
    print("  naive: one agent, per event table[key] = the window's stats as JSON (bench.monitor)")
    ratio = results["monitor"]["rate"] / results["naive"]["rate"]
    lag = b["from_last_s"]
    return [
        ("monitor / naive faust agent, records/s", ratio, "", None),
        ("monitor lag back to 0 after the burst ended (s)", lag, f"<= {LAG_TARGET_S:g}",
         lag <= LAG_TARGET_S),
        ("monitor lag back to 0 from the burst's first record (s)", b["from_first_s"], "", None),
    ]  # fmt: skip


# the naive faust app -----------------------------------------------------------------------
def naive_worker(bootstrap: str, prefix: str, partitions: int, state: Path) -> None:
    """Run the naive app (the monitor's faust settings, one agent, a table write per event)."""
    import faust  # noqa: PLC0415  # only the child process needs it
    from faust.worker import Worker  # noqa: PLC0415
    from modelyard.errors import DecodeError  # noqa: PLC0415
    from modelyard.monitor.hops import parse_hop  # noqa: PLC0415
    from modelyard.monitor.windows import WindowStats, window_start  # noqa: PLC0415

    app = faust.App(
        f"{prefix}.g.naive", broker=f"kafka://{bootstrap}", store="memory://",
        web_enabled=False, datadir=str(state / f"naive-{prefix}"), topic_partitions=partitions,
        topic_replication_factor=1, consumer_auto_offset_reset="earliest", producer_acks=-1,
        broker_session_timeout=10.0, broker_heartbeat_interval=2.5, broker_rebalance_timeout=10.0,
        broker_commit_interval=MonitorSettings.model_fields["commit_interval_s"].default,
    )  # fmt: skip
    source = app.topic(audit_topic(prefix), key_serializer="raw", value_serializer="raw")
    table = app.Table("windows", partitions=partitions, key_type=str)

    async def count(stream: Any) -> None:
        async for value in stream:
            try:
                hop = parse_hop(value)
            except DecodeError:
                continue
            if hop is not None:
                key = f"{hop.key.label()}|{int(window_start(hop.finished_at, 60))}"
                saved = table.get(key)
                stats = WindowStats() if saved is None else WindowStats.from_json(saved)
                stats.add(hop)
                table[key] = stats.to_json()

    app.agent(source, name="naive.windows")(count)
    Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


def main() -> None:
    parser = argparse.ArgumentParser(description="modelyard monitor against a naive faust agent")
    parser.add_argument("mode", nargs="?", choices=["bench", "naive"], default="bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bootstrap")
    parser.add_argument("--topic-prefix")
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument("--state", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    if args.mode == "naive":
        naive_worker(args.bootstrap, args.topic_prefix, args.partitions, args.state)
    else:
        report(run(args.quick))


if __name__ == "__main__":
    main()
