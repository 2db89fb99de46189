"""``modelyard up``'s state directory: what outlives one run of it.

    <state-dir>/lock             held (flock) while an up runs on it: a second one is refused
    <state-dir>/engine           the engine whose state this is (embedded or kafka)
    <state-dir>/journal.sqlite3  embedded engine: control records and unanswered requests
    <state-dir>/kafka/           kafka engine: Apache Kafka's storage
    <state-dir>/claims/          workers' partition claims (kafka/poison.py); on the embedded
                                 engine emptied at every start, as its topics start empty

Without a path, a temporary directory that is removed at stop: nothing is kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal, Self

import structlog

from modelyard.errors import ConfigError

__all__ = ["Engine", "StateDir", "StateDirError"]

log = structlog.get_logger(__name__)

Engine = Literal["embedded", "kafka"]
_JOURNAL = "journal.sqlite3"


class StateDirError(ConfigError):
    """The state directory is in use, or holds another engine's state."""


class StateDir:
    def __init__(self, path: Path | None, engine: Engine | None, *, fresh: bool = False) -> None:
        """``engine`` None: a cluster up does not run (only claims are kept here)."""
        self.engine, self.fresh = engine, fresh
        self._given = path.absolute() if path is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._lock_fd: int | None = None
        self.path = self._given or Path()

    @property
    def durable(self) -> bool:
        """Whether what is written here outlives this run."""
        return self._given is not None

    @property
    def journal(self) -> Path:
        return self.path / _JOURNAL

    @property
    def kafka(self) -> Path:
        return self.path / "kafka"

    @property
    def claims(self) -> Path:
        return self.path / "claims"

    def open(self) -> Self:
        if self._given is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="modelyard-up-state-")
            self.path = Path(self._tmp.name)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock()
            try:
                if self.fresh:
                    self._clear()
                if self.engine is not None:
                    self._check_engine()
            except BaseException:
                self.close()
                raise
        if self.engine == "embedded":  # offsets of the last broker's topics name nothing now
            shutil.rmtree(self.claims, ignore_errors=True)
        self.claims.mkdir(exist_ok=True)
        return self

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _lock(self) -> None:
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateDirError(
                f"another modelyard up (pid {holder}) runs on the state dir {self.path}; "
                f"stop it or pass another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _clear(self) -> None:
        log.warning("--fresh: starting over; the state kept so far is removed", path=str(self.path))
        for name in (_JOURNAL, f"{_JOURNAL}-wal", f"{_JOURNAL}-shm", "engine"):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        shutil.rmtree(self.kafka, ignore_errors=True)

    def _check_engine(self) -> None:
        marker = self.path / "engine"
        try:
            found = marker.read_text().strip()
        except FileNotFoundError:
            found = ""
        if found and found != self.engine:
            raise StateDirError(
                f"the state dir {self.path} holds the {found} engine's state; start with "
                f"--engine {found}, pass another --state-dir, or --fresh to start over"
            )
        marker.write_text(f"{self.engine}\n")
