"""`make bench`: modelyard against its peers, in one run, printed as figures and ratios.

Router: per-hop latency against a direct produce→consume, burst throughput and router CPU per
request against a bare confluent-kafka router (``bench.bare_router``) on the same no-op stages,
the four-stage reference pipeline end to end, and primary-path throughput with a shadow on and
off (``bench.router_bench``). Audit sink: records/s into SQLite and PostgreSQL against a bare
batched insert loop of the same rows, and the time to catch up with a burst
(``bench.sink_bench``). Monitor: audit records/s of `modelyard monitor` against a naive faust
agent that writes its table once per event, and the lag after a burst at the router's maximum
audit output (``bench.monitor``). perf_analyzer: Triton's perf_analyzer against one no-op stage,
req/s and p50/p99 at concurrency 1 and 8 beside the project's own grpc.aio client on the same stage
(``bench.perf_analyzer``).
Kafka: a no-op stage vs a bare confluent-kafka loop and a quixstreams app, on the embedded broker
and again on Apache Kafka (one KRaft node; ``--engines``) (20k-request burst throughput; p50/p99
at a paced 200 req/s). gRPC: ModelInfer on a no-op model
vs a bare grpc.aio servicer and MLServer 1.7.1, at concurrency 1 and 16. Kafka and gRPC targets
are measured in ``--rounds`` rounds (default 3; the paced latency in at most
``LATENCY_ROUNDS``), the order rotated each round so no target always meets a cold broker first
(``bench.rounds``); each figure prints as the median with every round's figure beside it, and
the ratios are of the medians. Models: items/s of every reference model version at batch 1 and
at its best batch (``bench.models_bench``, in a child process of its own, building ``models/``
first where it lacks a version). A report, not a test: the exit code is 0 whatever the figures;
a target that fails to start is reported as an error (that round's figure shows as n/a).

    python -m bench.run [--only kafka|grpc|models|router|sink|monitor|perf_analyzer] [--quick]
        [--rounds N] [--engines embedded,kafka]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from modelyard.broker import KAFKA_VERSION, EmbeddedBroker, KafkaCluster

from bench import monitor, perf_analyzer, router_bench, sink_bench
from bench.grpc_bench import (
    GrpcResult,
    bare_target,
    measure_grpc,
    mlserver_target,
    modelyard_grpc_target,
)
from bench.kafka_bench import (
    PARTITIONS,
    LatencyResult,
    ThroughputResult,
    measure_latency,
    measure_throughput,
    modelyard_target,
    peer_target,
)
from bench.kafka_peers import CONSUMER_SETTINGS, PRODUCER_SETTINGS
from bench.noop_repo import write_noop_repo
from bench.rounds import NOTE, heading, median, rotation, show

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
KAFKA_TARGETS = ("modelyard", "bare", "quix")
GRPC_TARGETS = ("modelyard", "bare", "mlserver")
GRPC_CONCURRENCIES = (1, 16)
PARTS = ("kafka", "grpc", "models", "router", "sink", "monitor", "perf_analyzer")
ROUNDS, QUICK_ROUNDS = 3, 1
LATENCY_ROUNDS = 3  # a paced Kafka run takes 10 s per target: the latency rounds are capped
Row = tuple[str, float | None, str, bool | None]


def _attempt(what: str, fn: Callable[[], T], errors: dict[str, str]) -> T | None:
    """Run one measurement; a failure is recorded and reported instead of ending the run."""
    try:
        return fn()
    except Exception as exc:
        errors[what] = f"{type(exc).__name__}: {str(exc).strip()[-600:]}"
        traceback.print_exc()
        return None


ENGINES = {"embedded": "embedded broker", "kafka": f"Apache Kafka {KAFKA_VERSION}, one KRaft node"}


@contextmanager
def _broker(engine: str, work: Path) -> Iterator[tuple[str, int | None]]:
    """The engine's broker, started: (bootstrap, the broker process's pid)."""
    if engine == "embedded":
        with EmbeddedBroker(log_file=work / "broker.log") as embedded:
            yield embedded.bootstrap, embedded.pid
    else:
        with KafkaCluster(1, data_dir=work / "kafka") as cluster:
            yield cluster.bootstrap, cluster.pid(1)


def run_kafka(
    repo: Path, work: Path, quick: bool, rounds: int, errors: dict[str, str], engine: str
) -> dict[str, list[Any]]:
    """Per target, ``tput`` and ``lat``: one result (``None`` if it failed) per round run, on
    ``engine`` (a key of ``ENGINES``)."""
    n, duration = (5_000, 4.0) if quick else (20_000, 10.0)
    targets = {"modelyard": modelyard_target(repo), **{p: peer_target(p) for p in ("bare", "quix")}}
    results: dict[str, list[Any]] = {f"{k}.{m}": [] for k in targets for m in ("tput", "lat")}
    with _broker(engine, work) as (bootstrap, pid):
        for r in range(rounds):
            for name in rotation(list(targets), r):
                print(f"kafka ({engine}): round {r + 1}/{rounds}: {name} ...", flush=True)
                target = targets[name]
                results[f"{name}.tput"].append(_attempt(
                    f"kafka ({engine}) {name} throughput, round {r + 1}",
                    lambda t=target, k=name: measure_throughput(
                        bootstrap, t, k, work, n=n, broker_pid=pid
                    ),
                    errors,
                ))  # fmt: skip
                if r < LATENCY_ROUNDS:
                    results[f"{name}.lat"].append(_attempt(
                        f"kafka ({engine}) {name} latency, round {r + 1}",
                        lambda t=target, k=name: measure_latency(
                            bootstrap, t, k, work, duration_s=duration
                        ),
                        errors,
                    ))  # fmt: skip
    return results


def run_grpc(
    repo: Path, work: Path, quick: bool, rounds: int, errors: dict[str, str]
) -> dict[str, list[GrpcResult | None]]:
    """Per target and concurrency (``modelyard.c16``): one result per round (``None``: failed)."""
    duration = 2.0 if quick else 5.0
    targets = {
        "modelyard": modelyard_grpc_target(repo), "bare": bare_target, "mlserver": mlserver_target
    }  # fmt: skip
    results: dict[str, list[GrpcResult | None]] = {
        f"{k}.c{c}": [] for k in targets for c in GRPC_CONCURRENCIES
    }
    for r in range(rounds):
        for name in rotation(list(targets), r):
            print(f"grpc: round {r + 1}/{rounds}: {name} ...", flush=True)
            points = _attempt(
                f"grpc {name}, round {r + 1}",
                lambda t=targets[name]: measure_grpc(t, work, GRPC_CONCURRENCIES, duration),
                errors,
            )
            by_c = {point.concurrency: point for point in points or []}
            for c in GRPC_CONCURRENCIES:
                results[f"{name}.c{c}"].append(by_c.get(c))
    return results


def run_models(errors: dict[str, str]) -> list[dict[str, Any]] | None:
    """The models bench in a fresh process: its BLAS thread settings must precede numpy."""
    print("models: every reference version ...", flush=True)

    def measure() -> list[dict[str, Any]]:
        cmd = [sys.executable, "-m", "bench.models_bench", "--json"]
        done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
        rows: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
        return rows

    return _attempt("models", measure, errors)


def run_router(quick: bool, errors: dict[str, str]) -> dict[str, Any] | None:
    """Router hop latency, bursts against the bare router, the reference pipeline, shadow cost
    (``bench.router_bench``)."""
    return _attempt("router", lambda: router_bench.run(quick), errors)


def print_models(rows: list[dict[str, Any]]) -> None:
    # imported late: the module sets BLAS thread limits, which the peers above must not inherit
    from bench.models_bench import print_table  # noqa: PLC0415

    print("\nModels, in-process predict(), items/s at batch 1 and at the best batch")
    print_table(rows)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _figures(results: Sequence[Any], attr: str) -> list[float | None]:
    """One attribute of each round's result; ``None`` for a round that failed."""
    return [None if r is None else getattr(r, attr) for r in results]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns as wide as their widest cell; the first left-aligned, the others right-aligned."""
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for first, *rest in lines:
        cells = (f"{cell:>{w + 3}}" for cell, w in zip(rest, widths[1:], strict=True))
        print(f"{first:<{widths[0]}}" + "".join(cells))


def print_kafka(res: dict[str, list[Any]], engine: str) -> list[Row]:
    rounds, lat_rounds = len(res["modelyard.tput"]), len(res["modelyard.lat"])
    print(f"\nKafka, {ENGINES[engine]}, {PARTITIONS} partitions, ~200-byte requests")
    print(f"burst req/s: {heading(rounds)}; p50/p99 at a paced 200 req/s: {heading(lat_rounds)}")
    if rounds > 1:
        print(NOTE)
    shared = {**CONSUMER_SETTINGS, **PRODUCER_SETTINGS}
    print("client settings, every target:", ", ".join(f"{k}={v}" for k, v in shared.items()))
    rows = []
    for name in KAFKA_TARGETS:
        tput: list[ThroughputResult | None] = res[f"{name}.tput"]
        lat: list[LatencyResult | None] = res[f"{name}.lat"]
        done = [x for x in lat if x is not None]
        answered = f"{sum(x.answered for x in done)}/{sum(x.sent for x in done)}" if done else "n/a"
        rows.append([
            name, show(_figures(tput, "rate"), ",.0f"), show(_figures(lat, "p50_ms")),
            show(_figures(lat, "p99_ms")), answered,
            show(_figures(tput, "service_cpu_us"), ",.1f"),
            show(_figures(tput, "broker_cpu_us"), ",.1f"),
        ])  # fmt: skip
    _table(["target", "burst req/s", "p50 ms", "p99 ms", "answered, all rounds",
            "CPU us/req, target", "CPU us/req, broker"], rows)  # fmt: skip
    rate = {k: median(_figures(res[f"{k}.tput"], "rate")) for k in KAFKA_TARGETS}
    p50 = median(_figures(res["modelyard.lat"], "p50_ms"))
    on = f" ({ENGINES[engine]})"
    return [
        _check("stage / bare loop, burst throughput, medians" + on,
               _ratio(rate["modelyard"], rate["bare"]), 0.8),
        _check("stage / quixstreams, burst throughput, medians" + on,
               _ratio(rate["modelyard"], rate["quix"]), 1.0),
        ("stage p50 at 200 req/s (ms), median" + on, p50, "< 5",
         None if p50 is None else p50 < 5),
    ]  # fmt: skip


def print_grpc(res: dict[str, list[GrpcResult | None]]) -> list[Row]:
    rounds = len(res["modelyard.c1"])
    print("\ngRPC ModelInfer, no-op model, one grpc.aio client process")
    print(f"{heading(rounds)}, each round a fresh server measured at every c")
    if rounds > 1:
        print(NOTE)
    rows = [
        [name, str(c), *(show(_figures(res[f"{name}.c{c}"], attr), spec) for attr, spec in
                         (("rate", ",.0f"), ("p50_ms", ",.1f"), ("p99_ms", ",.1f")))]
        for name in GRPC_TARGETS for c in GRPC_CONCURRENCIES
    ]  # fmt: skip
    _table(["target", "c", "req/s", "p50 ms", "p99 ms"], rows)
    rate = {k: median(_figures(runs, "rate")) for k, runs in res.items()}
    return [
        _check("gRPC stage / bare servicer, c=16, medians",
               _ratio(rate["modelyard.c16"], rate["bare.c16"]), 0.7),
        _check("gRPC stage / MLServer, c=16, medians",
               _ratio(rate["modelyard.c16"], rate["mlserver.c16"]), 1.5),
        _check("gRPC stage / MLServer, c=1, medians (info)",
               _ratio(rate["modelyard.c1"], rate["mlserver.c1"]), None),
    ]  # fmt: skip


def _check(label: str, ratio: float | None, target: float | None) -> Row:
    ok = None if ratio is None or target is None else ratio >= target
    return label, ratio, "" if target is None else f">= {target}", ok


def print_checks(rows: list[Row]) -> None:
    print(f"\n{'ratio / figure':<48}{'value':>10}{'target':>10}  verdict")
    for label, value, target, ok in rows:
        verdict = {True: "meets", False: "MISSES", None: "-"}[ok]
        shown = "n/a" if value is None else f"{value:.2f}"
        print(f"{label:<48}{shown:>10}{target:>10}  {verdict}")


def _positive(text: str) -> int:
    if (n := int(text)) < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1")
    return n


def _engines(text: str) -> list[str]:
    engines = [e.strip() for e in text.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise argparse.ArgumentTypeError(f"engines are {', '.join(ENGINES)}, not {text!r}")
    return engines


def main() -> None:
    parser = argparse.ArgumentParser(description="modelyard benchmarks against peers")
    parser.add_argument("--only", choices=[*PARTS])
    parser.add_argument("--quick", action="store_true", help="smaller burst, shorter runs")
    parser.add_argument(
        "--rounds", type=_positive, metavar="N",
        help=f"rounds per Kafka and gRPC target (default {ROUNDS}, {QUICK_ROUNDS} with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--engines", type=_engines, default=list(ENGINES), metavar="E[,E]",
        help="brokers the Kafka part runs on: embedded, kafka (Apache Kafka, one KRaft node; "
        "default both)",
    )  # fmt: skip
    args = parser.parse_args()
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    errors: dict[str, str] = {}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp:
        work = Path(tmp)
        repo = work / "models"
        wanted = {args.only} if args.only else set(PARTS)
        if wanted & {"kafka", "grpc"}:
            write_noop_repo(repo)
        engines = args.engines if "kafka" in wanted else []
        kafka = {e: run_kafka(repo, work, args.quick, rounds, errors, e) for e in engines}
        grpc_res = run_grpc(repo, work, args.quick, rounds, errors) if "grpc" in wanted else None
        models = run_models(errors) if "models" in wanted else None
        router = run_router(args.quick, errors) if "router" in wanted else None
        sink = (
            _attempt("sink", lambda: sink_bench.run(args.quick), errors)
            if "sink" in wanted
            else None
        )
        monitor_res = (
            _attempt("monitor", lambda: monitor.run(args.quick), errors)
            if "monitor" in wanted
            else None
        )
        perf = (
            _attempt("perf_analyzer", lambda: perf_analyzer.run(work, args.quick), errors)
            if "perf_analyzer" in wanted
            else None
        )
        for engine, kafka_res in kafka.items():
            rows += print_kafka(kafka_res, engine)
        if grpc_res is not None:
            rows += print_grpc(grpc_res)
        if models is not None:
            print_models(models)
        if router is not None:
            rows += router_bench.report(router)
        if sink is not None:
            rows += sink_bench.report(sink)
        if monitor_res is not None:
            rows += monitor.report(monitor_res)
        if perf is not None:
            rows += perf_analyzer.report(perf)
        if rows:
            print_checks(rows)
    for what, err in errors.items():
        print(f"\nerror in {what}: {err}")


if __name__ == "__main__":
    main()
