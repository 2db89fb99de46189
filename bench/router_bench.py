"""Router benchmarks: per-hop latency against a direct hop, the four-stage pipeline, shadow cost.

Every figure comes from one run on one embedded broker, with real `modelyard serve` workers and
a real `modelyard router` process:

- **direct hop**: produce to a topic, read it back (assign, same fetch settings as the router);
  the floor any Kafka hop pays on this broker.
- **router hop**: paced requests through a 1-stage and a 3-stage no-op pipeline; a k-stage
  pipeline crosses 2k+2 Kafka hops (ingress, dispatch and reply per stage, result), so
  latency / (2k+2) is the cost of one hop through the router, reported as a ratio to the direct hop.
- **reference pipeline**: the seven sample documents through OCR → language ID → translate →
  sentiment (real models), one at a time, p50/p99 end to end.
- **shadow**: a burst through a 2-stage no-op pipeline with and without a shadow of every
  request on its second stage (the shadow's worker and the shadow auditor niced, as `up` runs
  them); the ratio of primary-path throughput (target: >= 0.95), rounds interleaved and their
  order rotated, with the CPU each process spent per request during the burst.

    python -m bench.router_bench [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from modelyard.broker import EmbeddedBroker, create_topics
from modelyard.control import Rollout, ShadowChange
from modelyard.control.topic import write_change
from modelyard.repository.build import BuildContext
from modelyard.topics import pipeline_ingress_topic, pipeline_results_topic
from modelyard.wire import Envelope, encode_envelope

from bench.noop_repo import NOOP_MANIFEST, write_noop_repo
from bench.procs import ROOT, ServiceProcess, cpu_seconds, python_module

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

    def service(self, name: str, *args: str, ready: str, niced: bool = False) -> ServiceProcess:
        cmd = python_module("modelyard.cli.main", *args, "--bootstrap", self.bootstrap,
                            "--topic-prefix", self.prefix)  # fmt: skip
        proc = ServiceProcess(name, NICE + cmd if niced else cmd, self.work / f"{name}.log")
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
            write_change(self.bootstrap, pipeline, Rollout(stage=stage, version=version),
                         actor="bench", prefix=self.prefix)  # fmt: skip


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


SHADOW_MODES = {"off": 0.0, "on": 1.0, "on10": 0.1}  # mode -> share of requests mirrored


def measure_shadow(base: Bench, n: int, rounds: int) -> dict[str, list[BurstResult]]:
    results: dict[str, list[BurstResult]] = {mode: [] for mode in SHADOW_MODES}
    modes = list(SHADOW_MODES.items())
    for r in range(rounds):
        for mode, rate in modes[r % len(modes) :] + modes[: r % len(modes)]:  # rotated
            name = f"shadow_{mode}_{r}"
            with base.fresh("noop:1", shadow="noop:2" if rate else None) as bench:
                bench.rollout(name, {"s0": "1", "s1": "1"})
                if rate:
                    change = ShadowChange(stage="s1", version="2", sample_rate=rate)
                    write_change(bench.bootstrap, name, change, actor="bench", prefix=bench.prefix)
                with bench.router(_chain(name, 2), name), bench.shadow_audit(name, rate > 0):
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
    burst, rounds, repeats = (1000, 1, 1) if quick else (4000, 3, 3)
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
            print("router: shadow on/off bursts ...", flush=True)
            results["shadow"] = measure_shadow(bench, burst, rounds)
            print("router: reference pipeline ...", flush=True)
            results["reference"] = measure_reference(work, broker.bootstrap, repeats)
    return results


def report(results: dict[str, Any]) -> list[tuple[str, float | None, str, bool | None]]:
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
    print(
        "\nReference pipeline (ocr:1 -> langid:1 -> translate:1 -> sentiment:2), "
        f"{ref[2]} documents, one at a time: p50 {ref[0]:.1f} ms, p99 {ref[1]:.1f} ms"
    )
    shadow = results["shadow"]
    median = {mode: statistics.median(b.rate for b in runs) for mode, runs in shadow.items()}
    on, off, on10 = median["on"], median["off"], median["on10"]
    roles = ["router", "worker-noop:1", "shadow", "auditor", "broker", "load"]
    print(
        "\nShadow on the second stage of a 2-stage no-op pipeline, burst throughput (median), "
        "and CPU us per request by process (median; shadow worker and auditor niced)"
    )
    print(f"  {'':<12}{'req/s':>8}  {'  '.join(f'{r:>8.8}' for r in roles)}{'total':>9}  runs")
    for mode, rate in SHADOW_MODES.items():
        runs = shadow[mode]
        cpu = {r: statistics.median(b.cpu_us.get(r, 0.0) for b in runs) for r in roles}
        label = f"shadow {rate:.0%}" if rate else "no shadow"
        cells = "  ".join(f"{cpu[r]:>8.0f}" for r in roles)
        rates = [round(b.rate) for b in runs]
        print(f"  {label:<12}{median[mode]:>8,.0f}  {cells}{sum(cpu.values()):>9.0f}  {rates}")
    return [
        ("router hop p50 / direct hop p50", per_hop / direct, "", None),
        ("per stage added, ms (3 vs 1 stage)", per_stage, "", None),
        ("shadow 100% / off, primary throughput", on / off, ">= 0.95", on / off >= 0.95),
        ("shadow 10% / off, primary throughput", on10 / off, "", None),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="router benchmarks")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = report(run(args.quick))
    for label, value, target, ok in rows:
        verdict = {True: "meets", False: "MISSES", None: "-"}[ok]
        print(f"{label:<40}{'n/a' if value is None else f'{value:.2f}':>10}{target:>10}  {verdict}")


if __name__ == "__main__":
    main()
