"""Service processes for benchmarks: start, wait for a line, stop for sure."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ROOT", "ServiceProcess", "cpu_seconds", "python_module"]

ROOT = Path(__file__).resolve().parents[1]


def python_module(module: str, *args: str) -> list[str]:
    """Command line running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far, all its threads (0 once it is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        with open(f"/proc/{pid}/stat") as f:  # the process's own total covers every thread
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / tick


class ServiceProcess:
    """A subprocess whose output goes to a log file (never an undrained pipe)."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        log_path: Path,
        cwd: Path = ROOT,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        base = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        with log_path.open("wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                list(cmd), cwd=cwd, env={**base, **(env or {})}, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise with the log tail if the process has exited."""
        if not self.alive:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def wait_for_line(self, pattern: str, timeout_s: float = 60.0) -> re.Match[str]:
        """Wait until a log line matches ``pattern`` (polling the file, bounded in time)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            for line in text.splitlines():
                if match := regex.search(line):
                    return match
            self.check_alive()
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: no line matching {pattern!r}:\n{self.tail()}")

    def stop(self, grace_s: float = 15.0) -> int:
        """SIGTERM the process group, SIGKILL after ``grace_s``, reap; return the exit code."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def _signal(self, sig: int) -> None:
        # The whole session: MLServer and friends start workers of their own.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
