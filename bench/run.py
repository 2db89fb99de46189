"""`make bench`: modelyard against its peers, in one run, printed as figures and ratios.

Router: per-hop latency against a direct produce→consume, the four-stage reference pipeline end
to end, and primary-path throughput with a shadow on and off (``bench.router_bench``).
Kafka: a no-op stage vs a bare confluent-kafka loop and a quixstreams app on the embedded broker
(20k-request burst throughput; p50/p99 at a paced 200 req/s). gRPC: ModelInfer on a no-op model
vs a bare grpc.aio servicer and MLServer 1.7.1, at concurrency 1 and 16. Models: items/s of
every reference model version at batch 1 and at its best batch (``bench.models_bench``, in a
child process of its own, building ``models/`` first where it lacks a version). A report, not a
test: the exit code is 0 whatever the figures; a target that fails to start is reported as an
error.

    python -m bench.run [--only kafka|grpc|models|router] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from modelyard.broker import EmbeddedBroker

from bench import router_bench
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

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
KAFKA_TARGETS = ("modelyard", "bare", "quix")
GRPC_TARGETS = ("modelyard", "bare", "mlserver")


def _attempt(what: str, fn: Callable[[], T], errors: dict[str, str]) -> T | None:
    """Run one measurement; a failure is recorded and reported instead of ending the run."""
    try:
        return fn()
    except Exception as exc:
        errors[what] = f"{type(exc).__name__}: {str(exc).strip()[-600:]}"
        traceback.print_exc()
        return None


def run_kafka(repo: Path, work: Path, quick: bool, errors: dict[str, str]) -> dict[str, Any]:
    n, duration = (5_000, 4.0) if quick else (20_000, 10.0)
    targets = {"modelyard": modelyard_target(repo), **{p: peer_target(p) for p in ("bare", "quix")}}
    results: dict[str, Any] = {}
    with EmbeddedBroker(log_file=work / "broker.log") as broker:
        for name, target in targets.items():
            print(f"kafka: {name} ...", flush=True)
            results[f"{name}.tput"] = _attempt(
                f"kafka {name} throughput",
                lambda t=target, k=name: measure_throughput(broker.bootstrap, t, k, work, n=n),
                errors,
            )
            results[f"{name}.lat"] = _attempt(
                f"kafka {name} latency",
                lambda t=target, k=name: measure_latency(
                    broker.bootstrap, t, k, work, duration_s=duration
                ),
                errors,
            )
    return results


def run_grpc(repo: Path, work: Path, quick: bool, errors: dict[str, str]) -> dict[str, Any]:
    duration = 2.0 if quick else 5.0
    targets = {
        "modelyard": modelyard_grpc_target(repo), "bare": bare_target, "mlserver": mlserver_target
    }  # fmt: skip
    results: dict[str, Any] = {}
    for name, target in targets.items():
        print(f"grpc: {name} ...", flush=True)
        points = _attempt(
            f"grpc {name}", lambda t=target: measure_grpc(t, work, duration_s=duration), errors
        )
        for point in points or []:
            results[f"{name}.c{point.concurrency}"] = point
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
    """Router hop latency, the reference pipeline, shadow cost (``bench.router_bench``)."""
    return _attempt("router", lambda: router_bench.run(quick), errors)


def print_models(rows: list[dict[str, Any]]) -> None:
    # imported late: the module sets BLAS thread limits, which the peers above must not inherit
    from bench.models_bench import print_table  # noqa: PLC0415

    print("\nModels, in-process predict(), items/s at batch 1 and at the best batch")
    print_table(rows)


def _fmt(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.1f}{unit}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def print_kafka(res: dict[str, Any]) -> list[tuple[str, float | None, str, bool | None]]:
    print(f"\nKafka, embedded broker, {PARTITIONS} partitions, ~200-byte requests")
    shared = {**CONSUMER_SETTINGS, **PRODUCER_SETTINGS}
    print("client settings, every target:", ", ".join(f"{k}={v}" for k, v in shared.items()))
    print(f"{'target':<11}{'burst req/s':>14}{'p50 ms':>10}{'p99 ms':>10}{'answered':>12}")
    for name in KAFKA_TARGETS:
        tput: ThroughputResult | None = res.get(f"{name}.tput")
        lat: LatencyResult | None = res.get(f"{name}.lat")
        answered = f"{lat.answered}/{lat.sent}" if lat else "n/a"
        print(
            f"{name:<11}{_fmt(tput.rate if tput else None):>14}"
            f"{_fmt(lat.p50_ms if lat else None):>10}{_fmt(lat.p99_ms if lat else None):>10}"
            f"{answered:>12}"
        )
    rate = {k: (r.rate if (r := res.get(f"{k}.tput")) else None) for k in KAFKA_TARGETS}
    p50 = res["modelyard.lat"].p50_ms if res.get("modelyard.lat") else None
    return [
        _check("stage / bare loop, burst throughput", _ratio(rate["modelyard"], rate["bare"]), 0.8),
        _check(
            "stage / quixstreams, burst throughput", _ratio(rate["modelyard"], rate["quix"]), 1.0
        ),
        ("stage p50 at 200 req/s (ms)", p50, "< 5", None if p50 is None else p50 < 5),
    ]


def print_grpc(res: dict[str, Any]) -> list[tuple[str, float | None, str, bool | None]]:
    print("\ngRPC ModelInfer, no-op model, one grpc.aio client process")
    print(f"{'target':<11}{'c':>4}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
    for name in GRPC_TARGETS:
        for c in (1, 16):
            r: GrpcResult | None = res.get(f"{name}.c{c}")
            print(
                f"{name:<11}{c:>4}{_fmt(r.rate if r else None):>12}"
                f"{_fmt(r.p50_ms if r else None):>10}{_fmt(r.p99_ms if r else None):>10}"
            )
    rate = {k: (r.rate if (r := res.get(k)) else None) for k in res}
    return [
        _check("gRPC stage / bare servicer, c=16",
               _ratio(rate.get("modelyard.c16"), rate.get("bare.c16")), 0.7),
        _check("gRPC stage / MLServer, c=16",
               _ratio(rate.get("modelyard.c16"), rate.get("mlserver.c16")), 1.5),
        _check("gRPC stage / MLServer, c=1 (info)",
               _ratio(rate.get("modelyard.c1"), rate.get("mlserver.c1")), None),
    ]  # fmt: skip


def _check(
    label: str, ratio: float | None, target: float | None
) -> tuple[str, float | None, str, bool | None]:
    ok = None if ratio is None or target is None else ratio >= target
    return label, ratio, "" if target is None else f">= {target}", ok


def print_checks(rows: list[tuple[str, float | None, str, bool | None]]) -> None:
    print(f"\n{'ratio / figure':<40}{'value':>10}{'target':>10}  verdict")
    for label, value, target, ok in rows:
        verdict = {True: "meets", False: "MISSES", None: "-"}[ok]
        shown = "n/a" if value is None else f"{value:.2f}"
        print(f"{label:<40}{shown:>10}{target:>10}  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description="modelyard benchmarks against peers")
    parser.add_argument("--only", choices=["kafka", "grpc", "models", "router"])
    parser.add_argument("--quick", action="store_true", help="smaller burst, shorter runs")
    args = parser.parse_args()
    errors: dict[str, str] = {}
    rows: list[tuple[str, float | None, str, bool | None]] = []
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp:
        work = Path(tmp)
        repo = work / "models"
        wanted = {args.only} if args.only else {"kafka", "grpc", "models", "router"}
        if wanted & {"kafka", "grpc"}:
            write_noop_repo(repo)
        kafka = run_kafka(repo, work, args.quick, errors) if "kafka" in wanted else None
        grpc_res = run_grpc(repo, work, args.quick, errors) if "grpc" in wanted else None
        models = run_models(errors) if "models" in wanted else None
        router = run_router(args.quick, errors) if "router" in wanted else None
        if kafka is not None:
            rows += print_kafka(kafka)
        if grpc_res is not None:
            rows += print_grpc(grpc_res)
        if models is not None:
            print_models(models)
        if router is not None:
            rows += router_bench.report(router)
        if rows:
            print_checks(rows)
    for what, err in errors.items():
        print(f"\nerror in {what}: {err}")


if __name__ == "__main__":
    main()
