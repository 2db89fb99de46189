"""Coverage-guided fuzzing of every entry point (``make fuzz``): atheris for a time budget each.

Each entry point of ``tests.fuzz.targets.ENTRY_POINTS`` runs in its own process
(``python -m tests.fuzz.atheris_targets``) from seed inputs and the corpus cases that pass, in a
working folder libFuzzer grows. A crash, timeout (a hang) or out-of-memory stops libFuzzer; its
input is filed as ``tests/fuzz/corpus/<entry point>/<kind>-<sha256>`` (replayed by
``pytest tests/fuzz`` from then on) and the entry point goes on with the time left. Known
crashers of files awaiting a fix (``targets.KNOWN``) are counted, not stopped on, unless
``--stop-on-known``. The table at the end gives the cases run per entry point.

    uv run --frozen python scripts/fuzz.py --seconds 60 [--only router_ingress,stage_intake]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
sys.path.insert(0, str(ROOT))

from tests.fuzz.targets import ENTRY_POINTS  # noqa: E402  # the repo root first, as pytest does

_RUNS = re.compile(rb"^#(\d+)\s", re.MULTILINE)  # libFuzzer's status lines: "#1234 NEW ..."
_DONE = re.compile(rb"Done (\d+) runs in")
_ARTIFACT = re.compile(r"^(crash|timeout|oom|leak|slow-unit)-")
LIBFUZZER_FLAGS = [
    "-timeout=20",  # seconds one input may take: past it, a hang
    "-rss_limit_mb=3072",  # unbounded memory
    "-max_len=16384",
    "-print_final_stats=1",
]


@dataclass
class Outcome:
    entry_point: str
    runs: int = 0
    seconds: float = 0.0
    found: list[Path] = field(default_factory=list)


def fuzz(entry_point: str, seconds: float, work: Path, stop_on_known: bool) -> Outcome:
    """Fuzz ``entry_point`` for ``seconds``, restarting after each crash with the time left."""
    outcome, started = Outcome(entry_point), time.monotonic()
    inputs, artifacts = work / "inputs", work / "artifacts"
    artifacts.mkdir(parents=True)
    _seed(entry_point, inputs)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not stop_on_known:
        env["MODELYARD_FUZZ_KNOWN"] = "skip"
    while (left := seconds - (time.monotonic() - started)) >= 2:
        command = [
            sys.executable, "-m", "tests.fuzz.atheris_targets", entry_point,
            f"-max_total_time={int(left)}", f"-artifact_prefix={artifacts}/", *LIBFUZZER_FLAGS,
            str(inputs),
        ]  # fmt: skip
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, check=False)
        outcome.runs += _runs(proc.stderr)
        new = _file_artifacts(entry_point, artifacts)
        outcome.found += new
        if proc.returncode != 0 and not new:
            tail = proc.stderr.decode("utf-8", "replace")[-3000:]
            raise SystemExit(f"{entry_point}: the fuzzer failed without a finding:\n{tail}")
        if proc.returncode == 0:
            break
    outcome.seconds = time.monotonic() - started
    return outcome


def _seed(entry_point: str, inputs: Path) -> None:
    """Seed inputs, and every corpus case that passes now (a failing one would stop the run
    before it starts)."""
    subprocess.run(
        [sys.executable, "-m", "tests.fuzz.atheris_targets", "--seeds", entry_point, str(inputs)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True,
    )  # fmt: skip
    harness = ENTRY_POINTS[entry_point]
    logging.disable(logging.CRITICAL)  # the harnesses' services log every call
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    for case in sorted((CORPUS / entry_point).glob("*")):
        try:
            harness(case.read_bytes())
        except Exception:  # noqa: S112  # a known crasher: replayed by pytest, not here
            continue
        shutil.copy(case, inputs / f"corpus-{case.name}")


def _runs(stderr: bytes) -> int:
    done = _DONE.findall(stderr)
    if done:
        return int(done[-1])
    status = _RUNS.findall(stderr)
    return int(status[-1]) if status else 0


def _file_artifacts(entry_point: str, artifacts: Path) -> list[Path]:
    """Move libFuzzer's crash/timeout/oom files into the corpus; the new paths."""
    filed = []
    for artifact in sorted(artifacts.iterdir()):
        kind = _ARTIFACT.match(artifact.name)
        if kind is None:
            continue
        data = artifact.read_bytes()
        target = CORPUS / entry_point / f"{kind[1]}-{hashlib.sha256(data).hexdigest()[:16]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        artifact.unlink()
        filed.append(target)
    return filed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="budget per entry point")
    parser.add_argument("--only", default="", help="comma-separated entry points (default: all)")
    parser.add_argument("--stop-on-known", action="store_true", help="fail on known crashers too")
    args = parser.parse_args()
    chosen = [e for e in args.only.split(",") if e] or list(ENTRY_POINTS)
    unknown = sorted(set(chosen) - set(ENTRY_POINTS))
    if unknown:
        parser.error(f"unknown entry point(s) {unknown}; known: {', '.join(ENTRY_POINTS)}")
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="modelyard-fuzz-") as folder:
        for entry_point in chosen:
            outcome = fuzz(
                entry_point, args.seconds, Path(folder) / entry_point, args.stop_on_known
            )
            outcomes.append(outcome)
            print(f"{entry_point:<18} {outcome.runs:>10} cases in {outcome.seconds:6.0f} s"
                  f"  {len(outcome.found)} new crasher(s)", flush=True)  # fmt: skip
            for path in outcome.found:
                print(f"  {path.relative_to(ROOT)}", flush=True)
    total = sum(o.runs for o in outcomes)
    found = sum(len(o.found) for o in outcomes)
    where = CORPUS.relative_to(ROOT)
    print(f"{'total':<18} {total:>10} cases; {found} new crasher(s) filed under {where}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
