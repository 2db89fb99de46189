"""Starting `modelyard serve` as a real subprocess and waiting for its ready line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["RouterProcess", "StageProcess", "running_stage"]

ROOT = Path(__file__).resolve().parents[2]


class StageProcess:
    """`modelyard serve MODEL` (or another subcommand that prints a ready line) as a subprocess."""

    command = "serve"
    ready_prefix = "modelyard stage ready"

    def __init__(self, model: str, repository: Path, *args: str, env: dict[str, str] | None = None):
        cmd = [
            sys.executable,
            "-m",
            "modelyard.cli.main",
            self.command,
            model,
            "--repository",
            str(repository),
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            *args,
        ]
        full_env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MODELYARD_LOG_JSON": "true",
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.ready_line: str | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, name="stage-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith(self.ready_prefix):
                self.ready_line = line.strip()
                self._ready.set()
        self._ready.set()  # exited: wake waiters

    def wait_ready(self, timeout: float = 30) -> dict[str, str]:
        if not self._ready.wait(timeout) or self.ready_line is None:
            self.kill()
            raise RuntimeError("stage never became ready:\n" + "\n".join(self.lines[-30:]))
        return dict(p.split("=", 1) for p in self.ready_line.split()[3:] if "=" in p)

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class RouterProcess(StageProcess):
    """`modelyard router SPEC`; its first argument is the spec path instead of a model."""

    command = "router"
    ready_prefix = "modelyard router ready"


@contextmanager
def running_stage(
    model: str, repository: Path, *args: str, timeout: float = 30
) -> Iterator[tuple[StageProcess, dict[str, str]]]:
    stage = StageProcess(model, repository, *args)
    try:
        yield stage, stage.wait_ready(timeout)
    finally:
        stage.kill()
