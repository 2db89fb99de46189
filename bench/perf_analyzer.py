"""Triton's perf_analyzer against a stage, beside the project's own gRPC client on the same stage.

perf_analyzer (``scripts/fetch_perf_analyzer.sh`` puts it in ``.cache/perf_analyzer/<version>/``)
reads the model's metadata, configuration and statistics over OIP gRPC, then drives ModelInfer at
each concurrency until three measurement windows in a row agree; its CSV report gives infer/s and
the client's p50/p99. :func:`run_perf_analyzer` runs it against any address (the integration test
uses it too); :func:`run` and :func:`report` are ``make bench``'s part: one ``noop:1`` stage
process, measured first by ``bench.grpc_bench``'s grpc.aio client, then by perf_analyzer, at
concurrency 1 and 8, with the same request (``x``: 24 float32, raw).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.grpc_bench import GrpcResult, measure_address, modelyard_grpc_target
from bench.noop_repo import write_noop_repo
from bench.procs import ROOT

__all__ = [
    "PERF_ANALYZER_VERSION",
    "PerfResult",
    "perf_analyzer_binary",
    "report",
    "run",
    "run_perf_analyzer",
]

PERF_ANALYZER_VERSION = "2.51.0"  # as scripts/fetch_perf_analyzer.sh pins it
HOME = ROOT / ".cache" / "perf_analyzer" / PERF_ANALYZER_VERSION
CONCURRENCIES = (1, 8)
SHAPES = {"x": [24]}  # the noop model's input is a vector of any length: the grpc bench's 24
Row = tuple[str, float | None, str, bool | None]  # label, value, target, verdict (as bench.run)


@dataclass(frozen=True)
class PerfResult:
    """perf_analyzer's figures at one concurrency (the client's view)."""

    concurrency: int
    rate: float  # inferences (here: requests) per second
    p50_ms: float
    p99_ms: float


def perf_analyzer_binary() -> Path | None:
    """The fetched perf_analyzer, or None where ``make setup`` has not fetched it."""
    binary = HOME / "perf_analyzer"
    return binary if (HOME / ".complete").exists() else None


def run_perf_analyzer(
    address: str,
    model: str,
    concurrencies: Sequence[int],
    workdir: Path,
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    interval_ms: int = 1000,
    timeout_s: float = 300,
) -> list[PerfResult]:
    """perf_analyzer over gRPC, one run per concurrency; raises RuntimeError with its output if
    a run fails (a request error fails it). ``shapes``: the shape to send for an input with a
    variable dimension."""
    binary = perf_analyzer_binary()
    if binary is None:
        raise RuntimeError(f"{HOME} missing: run `make setup` (scripts/fetch_perf_analyzer.sh)")
    options = [
        "-i", "grpc", "-u", address, "-m", model, "--measurement-interval", str(interval_ms),
        # a shared 2-core machine never holds steady within perf_analyzer's default 10 %:
        # three windows in a row, whatever their spread, and their mean is the figure
        "--stability-percentage", "1000", "--max-trials", "3",
        *(f"--shape={name}:{','.join(map(str, dims))}" for name, dims in (shapes or {}).items()),
    ]  # fmt: skip
    results: list[PerfResult] = []
    for c in concurrencies:
        report_csv = workdir / f"perf_analyzer-{model}-c{c}.csv"
        args = [str(binary), *options, "--concurrency-range", str(c), "-f", str(report_csv)]
        results += _run(args, report_csv, timeout_s)
    return results


def _run(cmd: list[str], report_csv: Path, timeout_s: float) -> list[PerfResult]:
    env = {**os.environ, "LD_LIBRARY_PATH": _library_path()}
    done = subprocess.run(
        cmd, check=False, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout_s,
    )  # fmt: skip
    output = done.stdout + done.stderr
    if done.returncode != 0 or "error" in output.lower():
        raise RuntimeError(f"perf_analyzer exited {done.returncode}:\n{output[-3000:]}")
    return _parse(report_csv.read_text())


def _library_path() -> str:
    """Its libcudart.so.12 first, then whatever the caller had."""
    return os.pathsep.join(filter(None, [str(HOME / "lib"), os.environ.get("LD_LIBRARY_PATH")]))


def _parse(text: str) -> list[PerfResult]:
    """The rows of perf_analyzer's CSV report (latencies in microseconds), by concurrency."""
    results = [_result(row) for row in csv.DictReader(io.StringIO(text))]
    return sorted(results, key=lambda r: r.concurrency)


def _result(row: dict[str, str]) -> PerfResult:
    return PerfResult(
        concurrency=int(row["Concurrency"]),
        rate=float(row["Inferences/Second"]),
        p50_ms=int(row["p50 latency"]) / 1000,
        p99_ms=int(row["p99 latency"]) / 1000,
    )


def run(work: Path, quick: bool) -> dict[str, Any]:
    """One ``noop:1`` stage: the grpc.aio client's figures, then perf_analyzer's."""
    repo = work / "perf-models"
    write_noop_repo(repo)
    duration = 2.0 if quick else 5.0
    proc, address = modelyard_grpc_target(repo)(work)
    try:
        print("perf_analyzer: the project's grpc.aio client ...", flush=True)
        own = measure_address(proc, address, CONCURRENCIES, duration)
        print(f"perf_analyzer: perf_analyzer {PERF_ANALYZER_VERSION} ...", flush=True)
        triton = run_perf_analyzer(
            address, "noop", CONCURRENCIES, work, shapes=SHAPES, interval_ms=int(duration * 1000)
        )
    finally:
        proc.stop()
    return {"own": own, "perf_analyzer": triton, "window_s": duration}


def report(results: dict[str, Any]) -> list[Row]:
    own = {r.concurrency: r for r in results["own"]}
    triton: dict[int, PerfResult] = {r.concurrency: r for r in results["perf_analyzer"]}
    print("\nOIP gRPC ModelInfer on one `modelyard serve noop:1 --no-kafka` process, two clients")
    print(f"{'client':<28}{'c':>3}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    rows: list[Row] = []
    for c in CONCURRENCIES:
        print(_line("modelyard grpc.aio client", c, own.get(c)))
        print(_line("perf_analyzer", c, triton.get(c)))
        ratio = None if c not in own or c not in triton else triton[c].rate / own[c].rate
        rows.append((f"perf_analyzer / own gRPC client, c={c} (info)", ratio, "", None))
    window = results["window_s"]
    print(f"  own client: one grpc.aio channel, {window:.0f} s per c after a 1 s warm-up;")
    print(f"  perf_analyzer {PERF_ANALYZER_VERSION}: C++ gRPC client, synchronous calls, the mean")
    print(f"  of three {window:.0f} s windows per c; both send x = 24 float32 as raw contents")
    return rows


def _line(name: str, c: int, point: GrpcResult | PerfResult | None) -> str:
    if point is None:
        return f"{name:<28}{c:>3}{'n/a':>10}"
    return f"{name:<28}{c:>3}{point.rate:>10,.0f}{point.p50_ms:>9.2f}{point.p99_ms:>9.2f}"
