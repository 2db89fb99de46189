"""``AuditStore.write`` in a child process of its own: the sink's writes off its interpreter.

The sink parses records on its loop thread while a writer thread writes the previous batch. In
one process the two share the GIL: binding every value of a batch holds it, and each return
from the database waits for it. A child process writes with a GIL of its own; the parent only
serializes each batch's rows (its values) and waits for the child's answer without holding it.

The child is ``python -m modelyard.audit.store.process FD``: a fresh interpreter (librdkafka's
threads do not survive a fork, and multiprocessing's spawn would re-run the caller's main
module), talking over one end of a socket pair. The store's URL comes over the socket, never
on the command line (it may hold a password). The child opens the store the parent migrated
and answers each batch with None (committed) or the error's text. A child that dies is an error
of the write that was waiting for it, so the sink stops without committing that batch's
offsets, as for any failed write.
"""

from __future__ import annotations

import contextlib
import marshal
import pickle
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

from modelyard.audit.store.store import Batch, open_store
from modelyard.errors import ModelyardError

__all__ = ["StoreWriteError", "WriterProcess"]

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 10.0


class StoreWriteError(ModelyardError):
    """The writer process could not write a batch (or is gone)."""


class WriterProcess:
    """Writes batches to the store at ``url`` from a child process; one caller at a time."""

    def __init__(self, url: str) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            fd = theirs.fileno()
            self._proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(fd)], pass_fds=[fd], stdin=subprocess.DEVNULL
            )
            self._conn = Connection(ours.detach())
        self._conn.send(url)
        self._answer(_START_TIMEOUT_S, "start")

    def submit(self, batch: Batch) -> None:
        """Send a batch to be inserted in one transaction; ``result`` says whether it was."""
        data = _dumps(batch.rows)
        try:
            self._conn.send_bytes(data)
        except (OSError, ValueError) as exc:  # the child is gone
            raise StoreWriteError(f"the audit writer process is gone: {exc}") from None

    def result(self) -> None:
        """Wait for the answer of the oldest batch submitted; ``StoreWriteError`` if it did not
        commit."""
        self._answer(None, "write")

    def write(self, batch: Batch) -> None:
        """``submit`` and ``result``: one batch, written."""
        self.submit(batch)
        self.result()

    def close(self) -> None:
        """Let the child finish and close the store."""
        if self._proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):  # gone already
                self._conn.send_bytes(_dumps(None))
            try:
                self._proc.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._conn.close()

    def _answer(self, timeout_s: float | None, what: str) -> None:
        try:
            if timeout_s is not None and not self._conn.poll(timeout_s):
                raise StoreWriteError(f"the audit writer process did not {what} in {timeout_s} s")
            error = self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self._proc.poll()
            raise StoreWriteError(
                f"the audit writer process ended (exit code {code}) during {what}: {exc!r}"
            ) from None
        if error is not None:
            raise StoreWriteError(f"the audit store refused a {what}: {error}")


def _serve(conn: Connection) -> None:
    """The child: open the store named first, then write each batch sent until None."""
    url = conn.recv()
    try:
        store = open_store(url)
    except Exception as exc:  # the parent says why
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    conn.send(None)
    with store:
        while (rows := _receive(conn)) is not None:
            batch = Batch()
            batch.rows = rows
            try:
                store.write(batch)
            except Exception as exc:  # rolled back; the parent stops without committing
                conn.send(f"{type(exc).__name__}: {exc}")
                continue
            conn.send(None)


def _dumps(rows: Any) -> bytes:
    """A batch's rows for the child: marshal where every value is a plain str, bytes, number,
    bool or None (what parsed records give: half pickle's time, on the sink's GIL), else pickle.
    Parent and child are the same interpreter, so marshal's version-bound format is safe."""
    try:
        return _MARSHAL + marshal.dumps(rows)
    except ValueError:  # a value marshal does not take (e.g. a str subclass)
        return _PICKLE + pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)


def _loads(data: bytes) -> Any:
    body = memoryview(data)[1:]
    if data[:1] == _MARSHAL:
        return marshal.loads(body)  # noqa: S302 - our parent's batches only
    return pickle.loads(body)  # noqa: S301 - our parent's batches only


_MARSHAL, _PICKLE = b"m", b"p"


def _receive(conn: Connection) -> Any:
    try:
        return _loads(conn.recv_bytes())
    except EOFError:  # the parent is gone
        return None


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
