"""A `modelyard` command in a child process, its output drained by a thread, as services run."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Mapping

from tests.support.waiting import wait_until


class CliProcess:
    """``modelyard ARGS`` with its output in ``lines``; ``ready`` is its ready line's start."""

    def __init__(self, args: list[str], ready: str, env: Mapping[str, str] | None = None) -> None:
        self.ready = ready
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelyard.cli.main", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(self.proc.stdout or ()), daemon=True
        )
        self._reader.start()

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Until its ready line; AssertionError with its last output if it exited instead."""

        # anywhere in a line: a log line written from another thread may share it
        def up() -> bool:
            return any(self.ready in x for x in self.lines) or self.proc.poll() is not None

        wait_until(up, f"the ready line {self.ready!r}", timeout_s)
        assert self.proc.poll() is None, "".join(self.lines[-30:])

    def end(self, sig: int) -> int:
        """Send ``sig`` (if it still runs) and return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code
