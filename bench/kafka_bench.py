"""Load driver for services that consume requests from Kafka and reply on another topic.

A *target* starts one service process for a run (bootstrap, input topic, reply topic, group) and
returns a handle to stop it. Every run gets fresh topics, because Tansu's fetch cost grows with
the batches stored in a partition, and a warm-up request must be answered (the group join is
done) before anything is timed. All targets receive the same bytes: modelyard msgpack envelopes
with a ``reply-to`` header; the peers copy them unchanged to the reply topic.

Topics have ``PARTITIONS`` = 4 partitions (requests keyed by request id spread over them), the
count the broker's throughput figures in BROKER.md were measured with.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from modelyard.broker import create_topics
from modelyard.wire import Envelope, encode_envelope

from bench.kafka_peers import CONSUMER_SETTINGS, PRODUCER_SETTINGS
from bench.procs import ServiceProcess, cpu_seconds, python_module

__all__ = [
    "PARTITIONS",
    "KafkaRun",
    "KafkaTarget",
    "LatencyResult",
    "ThroughputResult",
    "measure_latency",
    "measure_throughput",
    "modelyard_target",
    "peer_target",
]

PARTITIONS = 4
PAYLOAD = np.zeros(24, dtype=np.float32)  # ~200-byte envelopes with a 16-char request id
WARMUP_PREFIX = "warm-"


@dataclass(frozen=True)
class KafkaRun:
    """Where one service instance reads and writes during one measurement."""

    bootstrap: str
    input_topic: str
    reply_topic: str
    group: str
    workdir: Path


KafkaTarget = Callable[[KafkaRun], ServiceProcess]


def peer_target(peer: str) -> KafkaTarget:
    """The bare confluent-kafka loop (``"bare"``) or the quixstreams app (``"quix"``)."""

    def start(run: KafkaRun) -> ServiceProcess:
        cmd = python_module(
            "bench.kafka_peers", peer, "--bootstrap", run.bootstrap, "--input-topic",
            run.input_topic, "--reply-topic", run.reply_topic, "--group", run.group,
        )  # fmt: skip
        return ServiceProcess(peer, cmd, run.workdir / f"{peer}-{run.group}.log")

    return start


def modelyard_target(repository: Path, model: str = "noop:1") -> KafkaTarget:
    """``modelyard serve`` on the no-op model; replies go to each request's ``reply-to``.

    It gets the client settings the peers and the reply reader get (through its documented
    ``MODELYARD_KAFKA_CONFIG``), so every target is measured with the same fetch wait and linger.
    """
    env = {"MODELYARD_KAFKA_CONFIG": json.dumps({**CONSUMER_SETTINGS, **PRODUCER_SETTINGS})}

    def start(run: KafkaRun) -> ServiceProcess:
        cmd = python_module(
            "modelyard.cli.main", "serve", model, "--repository", str(repository),
            "--bootstrap", run.bootstrap, "--metrics-port", "0", "--grpc-port", "0",
            "--input-topic", run.input_topic, "--group", run.group,
            "--topic-prefix", run.group,  # its DLQ and other topics stay private to the run
        )  # fmt: skip
        proc = ServiceProcess("modelyard", cmd, run.workdir / f"modelyard-{run.group}.log", env=env)
        try:
            proc.wait_for_line(r"^modelyard stage ready", timeout_s=120)
        except BaseException:
            proc.stop()
            raise
        return proc

    return start


def request(rid: str, reply_topic: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of one no-op request."""
    value = encode_envelope(Envelope(rid, {"x": PAYLOAD}))
    return rid.encode(), value, [("reply-to", reply_topic.encode())]


def fresh_run(bootstrap: str, label: str, workdir: Path) -> KafkaRun:
    """New topics and group for one measurement."""
    name = f"bench-{label}-{uuid.uuid4().hex[:8]}"
    run = KafkaRun(bootstrap, f"{name}.in", f"{name}.out", f"{name}.g", workdir)
    create_topics(bootstrap, [run.input_topic, run.reply_topic], partitions=PARTITIONS)
    return run


class ReplyReader:
    """Reads the reply topic from the beginning (assign, no group join) in a thread and records
    when each request id was first seen."""

    def __init__(self, run: KafkaRun) -> None:
        self.received: dict[str, float] = {}
        self.service_pid: int | None = None  # the process whose replies it reads
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer({
            "bootstrap.servers": run.bootstrap, "group.id": f"{run.group}.reader",
            "enable.auto.commit": False, **CONSUMER_SETTINGS,
        })  # fmt: skip
        self._consumer.assign(
            [TopicPartition(run.reply_topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
        )
        self._thread = threading.Thread(target=self._read, name="reply-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            # Drain what is queued; block only when nothing is (consume(n, t) waits for n).
            msgs = self._consumer.consume(1000, 0) or self._consumer.consume(1, 0.05)
            now = time.perf_counter()
            with self._lock:
                for msg in msgs:
                    if msg.error() is None and msg.key() is not None:
                        self.received.setdefault(msg.key().decode(), now)

    def count(self, prefix: str = "") -> int:
        with self._lock:
            return sum(1 for k in self.received if k.startswith(prefix))

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.received)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


@contextmanager
def serving(target: KafkaTarget, run: KafkaRun) -> Iterator[ReplyReader]:
    """Start the target, wait until it answers a warm-up request, stop everything after."""
    handle = target(run)
    reader = ReplyReader(run)
    reader.service_pid = handle.proc.pid
    try:
        _warm_up(run, handle, reader)
        yield reader
    finally:
        reader.close()
        handle.stop()


def _warm_up(
    run: KafkaRun, handle: ServiceProcess, reader: ReplyReader, timeout_s: float = 90
) -> None:
    producer = Producer({"bootstrap.servers": run.bootstrap, "linger.ms": 0})
    deadline = time.monotonic() + timeout_s
    sent = 0
    while reader.count(WARMUP_PREFIX) == 0:
        handle.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{handle.name} answered no warm-up request:\n{handle.tail()}")
        _produce(producer, run.input_topic, request(f"{WARMUP_PREFIX}{sent}", run.reply_topic))
        producer.flush(5)
        sent += 1
        time.sleep(0.25)


@dataclass(frozen=True)
class ThroughputResult:
    requests: int
    seconds: float
    service_cpu_us: float = float("nan")  # CPU per request of the target's process, in the burst
    broker_cpu_us: float = float("nan")  # and of the broker (when its pid is given)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def measure_throughput(
    bootstrap: str, target: KafkaTarget, label: str, workdir: Path, n: int = 20_000,
    timeout_s: float = 180, broker_pid: int | None = None,
) -> ThroughputResult:  # fmt: skip
    """Produce an ``n``-request burst; time until every reply has been read back, and the CPU
    the target's process (and the broker, given its pid) spent on it."""
    run = fresh_run(bootstrap, label, workdir)
    with serving(target, run) as reader:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        ids = [f"b{i:015d}" for i in range(n)]
        pids = {"service": reader.service_pid, "broker": broker_pid}
        before = {k: cpu_seconds(p) for k, p in pids.items() if p is not None}
        start = time.perf_counter()
        for rid in ids:
            _produce(producer, run.input_topic, request(rid, run.reply_topic))
        producer.flush(60)
        _wait_for(lambda: reader.count("b") >= n, timeout_s, f"{label}: burst replies")
        got = reader.snapshot()
        cpu = {k: (cpu_seconds(p) - before[k]) / n * 1e6 for k, p in pids.items() if k in before}
    return ThroughputResult(
        n, max(got[r] for r in ids) - start,
        cpu.get("service", float("nan")), cpu.get("broker", float("nan")),
    )  # fmt: skip


def _produce(
    producer: Producer, topic: str, req: tuple[bytes, bytes, list[tuple[str, bytes]]]
) -> None:
    key, value, headers = req
    while True:
        try:
            producer.produce(topic, value, key, headers=headers)
            break
        except BufferError:
            producer.poll(0.01)
    producer.poll(0)


def _wait_for(done: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not complete after {timeout_s:.0f} s")
        time.sleep(0.01)


@dataclass(frozen=True)
class LatencyResult:
    sent: int
    answered: int
    p50_ms: float
    p99_ms: float


def measure_latency(
    bootstrap: str, target: KafkaTarget, label: str, workdir: Path, rate: float = 200,
    duration_s: float = 10,
) -> LatencyResult:  # fmt: skip
    """Paced requests at ``rate``/s for ``duration_s``; latency = reply read - request sent."""
    run = fresh_run(bootstrap, label, workdir)
    with serving(target, run) as reader:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        sent = _paced(producer, run, rate, int(rate * duration_s))
        producer.flush(10)
        with contextlib.suppress(TimeoutError):  # the unanswered are reported below
            _wait_for(lambda: reader.count("p") >= len(sent), 15, f"{label}: paced replies")
        got = reader.snapshot()
    lat = np.array([(got[r] - t) * 1000 for r, t in sent.items() if r in got])
    if lat.size == 0:
        return LatencyResult(len(sent), 0, float("nan"), float("nan"))
    p50, p99 = np.percentile(lat, [50, 99])
    return LatencyResult(len(sent), int(lat.size), float(p50), float(p99))


def _paced(producer: Producer, run: KafkaRun, rate: float, n: int) -> dict[str, float]:
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        rid = f"p{i:015d}"
        req = request(rid, run.reply_topic)
        sent[rid] = time.perf_counter()
        _produce(producer, run.input_topic, req)
    return sent
