"""Router benchmarks: hop latency against a direct hop, bursts against a bare router, the
four-stage pipeline, shadow cost.

Every figure comes from one run on one embedded broker, with real `modelyard serve` workers and
a real `modelyard router` process:

- **direct hop**: produce to a topic, read it back (assign, same fetch settings as the router);
  the floor any Kafka hop pays on this broker.
- **router hop**: paced requests through a 1-stage and a 3-stage no-op pipeline; a k-stage
  pipeline crosses 2k+2 Kafka hops (ingress, dispatch and reply per stage, result), so
  latency / (2k+2) is the cost of one hop through the router, reported as a ratio to the direct hop.
- **reference pipeline**: the seven sample documents through OCR → language ID → translate →
  sentiment (real models), one at a time, p50/p99 end to end.
- **bursts**: N requests produced at once to a 2-stage no-op pipeline's ingress, timed until
  every result is read back, with the CPU each process spent per request during the burst
  (/proc utime + stime). Four modes, interleaved within a round, their order rotated between
  rounds: ``bench.bare_router`` (a plain confluent-kafka program making the router's Kafka calls:
  the floor for this pipeline on this broker), modelyard's router, and modelyard's router with a
  shadow of every request and of 10 % on the second stage (the shadow's worker and the shadow
  auditor niced, as `up` runs them). Ratios of medians: router / bare router throughput
  (target >= 0.5) and router CPU per request (target <= 2.0), shadow on / off throughput
  (target >= 0.95). The router hop p50 / direct hop p50 target is <= 1.2.

    python -m bench.router_bench [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from modelyard.broker import EmbeddedBroker, create_topics
from modelyard.control import Change, Rollout, ShadowChange
from modelyard.control.topic import write_change
from modelyard.control.verify import ControlVerifier
from modelyard.keys import Keyring, LocalKeys, SigningKey, ensure_local_keys
from modelyard.repository.build import BuildContext
from modelyard.topics import pipeline_ingress_topic, pipeline_results_topic
from modelyard.wire import Envelope, encode_envelope

from bench.noop_repo import NOOP_MANIFEST, write_noop_repo
from bench.procs import ROOT, ServiceProcess, cpu_seconds, python_module
from bench.rounds import heading, rotation

__all__ = ["main"]

PARTITIONS = 4
PAYLOAD = np.zeros(24, dtype=np.float32)
READER = {"fetch.wait.max.ms": 10, "enable.auto.commit": False}
NICE = ["nice", "-n", "10"]  # how `modelyard up` runs shadow-only workers and shadow auditors


def _chain(name: str, stages: int) -> str:
    lines = [f"pipeline: {name}", "version: 1", "inputs: {x: {datatype: FP32, shape: [-1]}}"]
    lines.append("stages:")
    source = "request.x"
    for i in range(stages):
        lines.append(f"  s{i}: {{model: noop, inputs: {{x: {source}}}}}")
        source = f"s{i}.y"
    lines.append(f"outputs: {{y: {source}}}")
    return "\n".join(lines) + "\n"


@dataclass
class Bench:
    bootstrap: str
    work: Path
    repo: Path
    prefix: str
    pids: dict[str, int]  # what runs now, by role: the broker, routers, workers, auditors
    # the keyring and keys `modelyard up` makes: services verify control records against it,
    # the router signs its audit checkpoints, the bench signs its changes as admin
    keys: LocalKeys = field(init=False)

    def __post_init__(self) -> None:
        self.keys = ensure_local_keys(self.work / "state")  # made once, reused after

    def service(self, name: str, *args: str, ready: str, niced: bool = False) -> ServiceProcess:
        """A ``modelyard`` command on this bench's broker and topics, once it logs ``ready``."""
        cmd = python_module("modelyard.cli.main", *args, "--bootstrap", self.bootstrap,
                            "--topic-prefix", self.prefix)  # fmt: skip
        env = {"MODELYARD_KEYRING": str(self.keys.keyring),
               "MODELYARD_WRITER_KEY": str(self.keys.router_key)}  # fmt: skip
        return self.start(name, NICE + cmd if niced else cmd, ready, env)

    def start(
        self, name: str, cmd: list[str], ready: str, env: dict[str, str] | None = None
    ) -> ServiceProcess:
        proc = ServiceProcess(name, cmd, self.work / f"{name}.log", env=env)
        try:
            proc.wait_for_line(ready, timeout_s=180)
        except BaseException:
            proc.stop()
            raise
        self.pids[name] = proc.proc.pid
        return proc

    def stop(self, name: str, proc: ServiceProcess) -> None:
        self.pids.pop(name, None)
        proc.stop()

    def worker(self, model: str, role: str | None = None) -> ServiceProcess:
        """A `modelyard serve` worker; ``role="shadow"`` runs it niced, as `up` does."""
        args = ("serve", model, "--repository", str(self.repo), "--no-grpc", "--metrics-port", "0")
        ready = r"^modelyard stage ready"
        return self.service(role or f"worker-{model}", *args, ready=ready, niced=role == "shadow")

    @contextmanager
    def fresh(self, *models: str, shadow: str | None = None) -> Iterator[Bench]:
        """A bench on new topics (a new prefix) with its own workers: Tansu's fetch cost grows
        with the batches a partition holds, so no measurement may inherit another's topics."""
        bench = Bench(self.bootstrap, self.work, self.repo, f"rb{uuid.uuid4().hex[:6]}", self.pids)
        workers = [(f"worker-{m}", bench.worker(m)) for m in models]
        if shadow is not None:
            workers.append(("shadow", bench.worker(shadow, "shadow")))
        try:
            yield bench
        finally:
            for name, worker in workers:
                bench.stop(name, worker)

    @contextmanager
    def router(self, spec: str, pipeline: str) -> Iterator[None]:
        path = self.work / f"{pipeline}.yaml"
        path.write_text(spec)
        args = ("router", str(path), "--repository", str(self.repo), "--no-grpc",
                "--partitions", str(PARTITIONS), "--metrics-port", "0")  # fmt: skip
        proc = self.service("router", *args, ready=r"^modelyard router ready")
        try:
            yield
        finally:
            self.stop("router", proc)

    @contextmanager
    def bare_router(self, pipeline: str, stages: dict[str, str]) -> Iterator[None]:
        """``bench.bare_router`` in the router's place (and under its name, for the CPU tally)."""
        cmd = python_module("bench.bare_router", "--bootstrap", self.bootstrap, "--prefix",
                            self.prefix, "--pipeline", pipeline,
                            *(f"--stage={s}={m}" for s, m in stages.items()))  # fmt: skip
        proc = self.start("router", cmd, ready=r"^bare router ready")
        try:
            yield
        finally:
            self.stop("router", proc)

    @contextmanager
    def shadow_audit(self, pipeline: str, on: bool) -> Iterator[None]:
        """The shadow auditor, niced as `modelyard up` runs it: part of what a shadow costs."""
        if not on:
            yield
            return
        path = self.work / f"{pipeline}.yaml"
        ready = r"^modelyard shadow-audit ready"
        proc = self.service("auditor", "shadow-audit", str(path), ready=ready, niced=True)
        try:
            yield
        finally:
            self.stop("auditor", proc)

    def rollout(self, pipeline: str, stages: dict[str, str]) -> None:
        for stage, version in stages.items():
            self.change(pipeline, Rollout(stage=stage, version=version))

    def change(self, pipeline: str, change: Change) -> None:
        """Write ``change``, signed by the admin key, as an operator's CLI would."""
        write_change(self.bootstrap, pipeline, change, signer=SigningKey.load(self.keys.admin_key),
                     verifier=ControlVerifier(Keyring.load(self.keys.keyring)),
                     prefix=self.prefix)  # fmt: skip


class Reader:
    """Reads a topic from the beginning in a thread; records when each key was first seen."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"r-{topic}", **READER}
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            msgs = self._consumer.consume(1000, 0) or self._consumer.consume(1, 0.05)
            now = time.perf_counter()
            for msg in msgs:
                if msg.error() is None and msg.key() is not None:
                    self.seen.setdefault(msg.key().decode(), now)

    def wait(self, keys: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(k in self.seen for k in keys):
            if time.monotonic() > deadline:
                missing = sum(k not in self.seen for k in keys)
                raise TimeoutError(f"{missing} of {len(keys)} not answered in {timeout_s:.0f} s")
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def _request(rid: str, fields: dict[str, Any] | None = None) -> bytes:
    return encode_envelope(Envelope(rid, fields if fields is not None else {"x": PAYLOAD}))


def _paced(bootstrap: str, source: str, sink: str, n: int, rate: float) -> dict[str, float]:
    """Latency in ms of ``n`` requests sent at ``rate``/s to ``source``, read back on ``sink``."""
    reader, producer = (
        Reader(bootstrap, sink),
        Producer({"bootstrap.servers": bootstrap, "linger.ms": 0}),
    )
    tag = uuid.uuid4().hex[:6]
    try:
        _warm_up(producer, reader, source, tag)
        sent: dict[str, float] = {}
        start = time.perf_counter()
        for i in range(n):
            if (delay := start + i / rate - time.perf_counter()) > 0:
                time.sleep(delay)
            rid = f"{tag}-p{i}"
            sent[rid] = time.perf_counter()
            producer.produce(source, _request(rid), rid)
            producer.poll(0)
        producer.flush(10)
        reader.wait(list(sent), 60)
        return {rid: (reader.seen[rid] - t) * 1000 for rid, t in sent.items()}
    finally:
        reader.close()


def _warm_up(producer: Producer, reader: Reader, source: str, tag: str) -> None:
    for i in range(600):  # until the path answers: groups joined, topics known
        rid = f"{tag}-warm{i}"
        producer.produce(source, _request(rid), rid)
        producer.flush(5)
        try:
            reader.wait([rid], 0.5)
            return
        except TimeoutError:
            continue
    raise TimeoutError("no warm-up request was answered")


@dataclass
class BurstResult:
    rate: float  # requests/s, from the first send to the last result
    cpu_us: dict[str, float]  # CPU microseconds per request during the burst, by process


def _burst(bootstrap: str, source: str, sink: str, n: int, pids: dict[str, int]) -> BurstResult:
    """An ``n``-request burst, and the CPU that ``pids`` (and this process) spent on it."""
    reader, producer = (
        Reader(bootstrap, sink),
        Producer({"bootstrap.servers": bootstrap, "linger.ms": 5}),
    )
    tag = uuid.uuid4().hex[:6]
    try:
        _warm_up(producer, reader, source, tag)
        ids = [f"{tag}-b{i}" for i in range(n)]
        pids = {**pids, "load": os.getpid()}
        cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        start = time.perf_counter()
        for rid in ids:
            while True:
                try:
                    producer.produce(source, _request(rid), rid)
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
        producer.flush(60)
        reader.wait(ids, 300)
        rate = n / (max(reader.seen[r] for r in ids) - start)
        cpu = {role: (cpu_seconds(pid) - cpu_before[role]) / n * 1e6 for role, pid in pids.items()}
        return BurstResult(rate, cpu)
    finally:
        reader.close()


def _pct(values: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.array(values), [50, 99])
    return float(p50), float(p99)


def measure_hops(base: Bench, n: int, rate: float) -> dict[str, tuple[float, float]]:
    topic = f"{base.prefix}.direct"
    create_topics(base.bootstrap, [topic], partitions=PARTITIONS)
    out = {"direct": _pct(list(_paced(base.bootstrap, topic, topic, n, rate).values()))}
    for stages in (1, 3):
        name = f"chain{stages}"
        with base.fresh("noop:1") as bench:
            bench.rollout(name, {f"s{i}": "1" for i in range(stages)})
            with bench.router(_chain(name, stages), name):
                lat = _paced(bench.bootstrap, _in(bench, name), _out(bench, name), n, rate)
        out[name] = _pct(list(lat.values()))
    return out


# burst mode -> share of requests mirrored to a shadow of s1; "bare": bench.bare_router, no shadow
BURST_MODES = {"bare": 0.0, "off": 0.0, "on": 1.0, "on10": 0.1}
BURST_STAGES = {"s0": "noop:1", "s1": "noop:1"}


def measure_bursts(base: Bench, n: int, rounds: int) -> dict[str, list[BurstResult]]:
    """2-stage no-op pipeline bursts through the bare router and through modelyard's, with no
    shadow, a shadow of every request and of 10 %; each on fresh topics and workers, the modes
    interleaved within a round and their order rotated between rounds."""
    results: dict[str, list[BurstResult]] = {mode: [] for mode in BURST_MODES}
    for r in range(rounds):
        for mode in rotation(list(BURST_MODES), r):
            rate, name = BURST_MODES[mode], f"burst_{mode}_{r}"
            with base.fresh("noop:1", shadow="noop:2" if rate else None) as bench:
                bench.rollout(name, {stage: m.split(":")[1] for stage, m in BURST_STAGES.items()})
                if rate:
                    change = ShadowChange(stage="s1", version="2", sample_rate=rate)
                    bench.change(name, change)
                router = (
                    bench.bare_router(name, BURST_STAGES) if mode == "bare"
                    else bench.router(_chain(name, len(BURST_STAGES)), name)
                )  # fmt: skip
                with router, bench.shadow_audit(name, rate > 0):
                    burst = _burst(
                        bench.bootstrap, _in(bench, name), _out(bench, name), n, bench.pids
                    )
            results[mode].append(burst)
    return results


def measure_reference(work: Path, bootstrap: str, repeats: int) -> tuple[float, float, int]:
    """The sample documents through the reference pipeline, one at a time (closed loop)."""
    from modelyard_ocr.corpus import CORPUS  # noqa: PLC0415  # only this measurement needs OCR
    from modelyard_ocr.samples import render  # noqa: PLC0415

    prefix = f"ref{uuid.uuid4().hex[:6]}"
    bench = Bench(bootstrap, work, ROOT / "models", prefix, {})
    versions = {"ocr": "1", "langid": "1", "translate": "1", "sentiment": "2"}
    bench.rollout("docs", versions)
    workers = [bench.worker(f"{m}:{v}") for m, v in versions.items()]
    try:
        spec = (ROOT / "pipelines" / "docs.yaml").read_text()
        with bench.router(spec, "docs"):
            reader = Reader(bootstrap, pipeline_results_topic(prefix, "docs"))
            producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
            langs = ("en", "es", "fr", "pt", "it", "ca", "de")
            images = [
                render(CORPUS[lang][i], noisy=i % 2 == 1, seed=i) for i, lang in enumerate(langs)
            ]
            lat = _closed_loop(
                producer, reader, pipeline_ingress_topic(prefix, "docs"), images, repeats
            )
            reader.close()
    finally:
        for w in workers:
            w.stop()
    p50, p99 = _pct(lat)
    return p50, p99, len(lat)


def _closed_loop(
    producer: Producer, reader: Reader, topic: str, images: list[bytes], repeats: int
) -> list[float]:
    lat = []
    for r in range(repeats + 1):  # the first round warms every stage up and is not counted
        for i, image in enumerate(images):
            rid = f"doc-{r}-{i}"
            start = time.perf_counter()
            producer.produce(topic, _request(rid, {"image": [image]}), rid)
            producer.flush(5)
            reader.wait([rid], 120)
            if r:
                lat.append((reader.seen[rid] - start) * 1000)
    return lat


def _in(bench: Bench, pipeline: str) -> str:
    return pipeline_ingress_topic(bench.prefix, pipeline)


def _out(bench: Bench, pipeline: str) -> str:
    return pipeline_results_topic(bench.prefix, pipeline)


def run(quick: bool) -> dict[str, Any]:
    n, rate = (300, 100.0) if quick else (1000, 100.0)
    # quick bursts of 2,000: CPU is read in 10 ms ticks, and 1,000 cost the bare router ~6
    burst, rounds, repeats = (2000, 1, 1) if quick else (4000, 3, 3)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="modelyard-router-bench-") as tmp:
        work = Path(tmp)
        repo = work / "models"
        write_noop_repo(repo)
        BuildContext(root=repo, cache=repo / ".cache").write_version(
            {**NOOP_MANIFEST, "version": "2"}, files={}
        )
        with EmbeddedBroker(log_file=work / "broker.log") as broker:
            assert broker.pid is not None
            prefix = f"rb{uuid.uuid4().hex[:6]}"
            bench = Bench(broker.bootstrap, work, repo, prefix, {"broker": broker.pid})
            print("router: hop latency ...", flush=True)
            results["hops"] = measure_hops(bench, n, rate)
            print("router: bursts, bare router and modelyard's, shadow on/off ...", flush=True)
            results["bursts"] = measure_bursts(bench, burst, rounds)
            results["burst_size"] = burst
            print("router: reference pipeline ...", flush=True)
            try:
                results["reference"] = measure_reference(work, broker.bootstrap, repeats)
            except Exception as exc:  # e.g. models/ not built: the no-op figures still stand
                traceback.print_exc()
                why = " ".join(str(exc).split())[-300:]  # one line in the report
                results["reference"] = f"{type(exc).__name__}: {why}"
    return results


Row = tuple[str, float | None, str, bool | None]  # label, value, target, verdict (as bench.run)
HOP_TARGET = 1.2  # router hop p50 / direct hop p50, at most (issue 15)
BARE_RATE_TARGET = 0.5  # modelyard / bare router burst throughput, at least
BARE_CPU_TARGET = 2.0  # modelyard / bare router CPU per request, at most
BURST_LABELS = {
    "bare": "bare router", "off": "modelyard", "on": "+ shadow 100%", "on10": "+ shadow 10%"
}  # fmt: skip
BURST_ROLES = ["router", "worker-noop:1", "shadow", "auditor", "broker", "load"]


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None  # no CPU tick in a burst: n/a, not a crash


def _at_most(label: str, value: float | None, limit: float) -> Row:
    return label, value, f"<= {limit}", None if value is None else value <= limit


def _at_least(label: str, value: float | None, limit: float) -> Row:
    return label, value, f">= {limit}", None if value is None else value >= limit


def report(results: dict[str, Any]) -> list[Row]:
    hops = results["hops"]
    direct = hops["direct"][0]
    print(f"\nRouter, embedded broker, {PARTITIONS} partitions, no-op stages, paced at 100 req/s")
    print(f"{'path':<28}{'Kafka hops':>11}{'p50 ms':>10}{'p99 ms':>10}{'p50 per hop':>13}")
    label = "direct produce -> consume"
    print(f"{label:<28}{1:>11}{direct:>10.1f}{hops['direct'][1]:>10.1f}{direct:>13.1f}")
    for stages in (1, 3):
        p50, p99 = hops[f"chain{stages}"]
        k = 2 * stages + 2
        label = f"router, {stages}-stage pipeline"
        print(f"{label:<28}{k:>11}{p50:>10.1f}{p99:>10.1f}{p50 / k:>13.1f}")
    per_hop = hops["chain3"][0] / 8
    per_stage = (hops["chain3"][0] - hops["chain1"][0]) / 2
    ref = results["reference"]
    title = "\nReference pipeline (ocr:1 -> langid:1 -> translate:1 -> sentiment:2)"
    if isinstance(ref, str):
        print(f"{title}: n/a ({ref})")
    else:
        p50, p99, count = ref
        print(f"{title}, {count} documents, one at a time: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    bursts = results["bursts"]
    rate = {mode: statistics.median(b.rate for b in runs) for mode, runs in bursts.items()}
    cpu = {
        mode: {r: statistics.median(b.cpu_us.get(r, 0.0) for b in runs) for r in BURST_ROLES}
        for mode, runs in bursts.items()
    }
    print(
        f"\n2-stage no-op pipeline, bursts of {results['burst_size']:,} requests, "
        f"{heading(len(bursts['off']))}: bench.bare_router and modelyard's router\n"
        "(shadow on s1, its worker and the auditor niced): req/s and CPU us per request by process"
    )
    roles = "  ".join(f"{r:>8.8}" for r in BURST_ROLES)
    print(f"  {'':<13}{'req/s':>8}  {roles}{'total':>9}  rounds: req/s; router us/req")
    for mode, runs in bursts.items():
        cells = "  ".join(f"{cpu[mode][r]:>8.0f}" for r in BURST_ROLES)
        total = sum(cpu[mode].values())
        # every round, so the ratios' medians can be read against their spread
        rates = " / ".join(f"{b.rate:,.0f}" for b in runs)
        router_us = " / ".join(f"{b.cpu_us.get('router', 0.0):.0f}" for b in runs)
        print(
            f"  {BURST_LABELS[mode]:<13}{rate[mode]:>8,.0f}  {cells}{total:>9.0f}  "
            f"{rates}; {router_us}"
        )
    off = rate["off"]
    return [
        _at_least("router / bare router, burst throughput",
                  _ratio(off, rate["bare"]), BARE_RATE_TARGET),
        _at_most("router / bare router, router CPU per request",
                 _ratio(cpu["off"]["router"], cpu["bare"]["router"]), BARE_CPU_TARGET),
        _at_most("router hop p50 / direct hop p50", per_hop / direct, HOP_TARGET),
        ("per stage added, ms (3 vs 1 stage)", per_stage, "", None),
        _at_least("shadow 100% / off, primary throughput", rate["on"] / off, 0.95),
        ("shadow 10% / off, primary throughput", rate["on10"] / off, "", None),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description="router benchmarks")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = report(run(args.quick))
    for label, value, target, ok in rows:
        verdict = {True: "meets", False: "MISSES", None: "-"}[ok]
        print(f"{label:<48}{'n/a' if value is None else f'{value:.2f}':>10}{target:>10}  {verdict}")


if __name__ == "__main__":
    main()
