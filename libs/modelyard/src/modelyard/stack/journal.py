"""The embedded broker's journal: what ``modelyard up`` must not lose when its broker does.

The embedded broker keeps everything in memory. The journal (SQLite in WAL mode, one file under
``--state-dir``) keeps a copy of what a restart needs: every control record, in topic order, and
every request accepted on a pipeline's ingress topic until its final result is seen on the
pipeline's results topic. :mod:`modelyard.stack.journal_worker` fills it from the broker;
:mod:`modelyard.stack.restore` produces it back into a fresh broker.

Rows are identified by the journal; ``offset`` says where a row sits on the *current* broker
(NULL: not on it). Copies are keyed by that position, so the worker reading a topic from its
start, the records restored into it included, copies nothing twice.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from modelyard.errors import ConfigError

__all__ = ["Copy", "Journal", "JournalError", "Kept"]

SCHEMA_VERSION = 1
_ANSWERED_KEEP_S = 3600.0  # a result seen before its request was copied: kept this long
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS control (
    id INTEGER PRIMARY KEY AUTOINCREMENT, offset INTEGER UNIQUE,
    key BLOB, value BLOB, headers BLOB NOT NULL, timestamp INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    offset INTEGER, request_id TEXT NOT NULL, key BLOB, value BLOB, headers BLOB NOT NULL,
    timestamp INTEGER NOT NULL, UNIQUE (topic, partition, offset));
CREATE INDEX IF NOT EXISTS requests_by_id ON requests (request_id);
CREATE TABLE IF NOT EXISTS answered (request_id TEXT PRIMARY KEY, seen_at REAL NOT NULL);
"""

Headers = list[tuple[str, bytes | None]]


class JournalError(ConfigError):
    """The journal exists but cannot be read: ``up`` refuses to start rather than reset."""


@dataclass(frozen=True, slots=True)
class Copy:
    """One record as the broker holds it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)
    timestamp: int = 0  # ms since the epoch, as the broker stamped it
    request_id: str = ""  # ingress requests only


@dataclass(frozen=True, slots=True)
class Kept:
    """A journaled record to produce again: its journal id, where it went, what it was."""

    id: int
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int


class Journal:
    """One SQLite file; use from one thread at a time (the worker, or ``up`` before it runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        existed = path.exists()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: survives any process death
            self._check(existed)
        except sqlite3.Error as exc:
            raise JournalError(_unreadable(path, str(exc))) from None

    def _check(self, existed: bool) -> None:
        if existed:
            ok = self._db.execute("PRAGMA quick_check").fetchone()
            if ok is None or ok[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {ok[0] if ok else 'no answer'}")
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
            if "meta" not in tables:
                raise sqlite3.DatabaseError("not a modelyard journal (no meta table)")
            version = self._db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
            if version is None or version[0] != str(SCHEMA_VERSION):
                found = version[0] if version else "none"
                raise sqlite3.DatabaseError(
                    f"journal schema {found}, this modelyard reads {SCHEMA_VERSION}"
                )
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    # what restore reads and renumbers ----------------------------------------------------
    def control_records(self) -> list[Kept]:
        rows = self._db.execute(
            "SELECT id, key, value, headers, timestamp FROM control ORDER BY id"
        )
        return [Kept(i, "", 0, k, v, _unpack(h), ts) for i, k, v, h, ts in rows]

    def unanswered(self) -> list[Kept]:
        """Requests whose result was not seen, in the order they were accepted."""
        rows = self._db.execute(
            "SELECT id, topic, partition, key, value, headers, timestamp FROM requests ORDER BY id"
        )
        return [Kept(i, t, p, k, v, _unpack(h), ts) for i, t, p, k, v, h, ts in rows]

    def counts(self) -> tuple[int, int]:
        """(control records, unanswered requests)."""
        control = self._db.execute("SELECT count(*) FROM control").fetchone()[0]
        requests = self._db.execute("SELECT count(*) FROM requests").fetchone()[0]
        return int(control), int(requests)

    def moved(
        self, control: Sequence[tuple[int, int]], requests: Sequence[tuple[int, int, int]]
    ) -> None:
        """A fresh broker: nothing is on it except what restore produced. ``control``:
        (journal id, new offset); ``requests``: (journal id, new partition, new offset)."""
        with self._transaction():
            self._db.execute("UPDATE control SET offset = NULL")
            self._db.execute("UPDATE requests SET offset = NULL")
            self._db.executemany("UPDATE control SET offset = ? WHERE id = ?",
                                 [(off, i) for i, off in control])  # fmt: skip
            self._db.executemany(
                "UPDATE requests SET partition = ?, offset = ? WHERE id = ?",
                [(p, off, i) for i, p, off in requests],
            )

    # what the worker writes --------------------------------------------------------------
    def record(
        self, control: Iterable[Copy], requests: Iterable[Copy], answered: Iterable[str]
    ) -> None:
        """Copies and results seen, in one transaction: on disk when this returns."""
        now = time.time()
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO control (offset, key, value, headers, timestamp) "
                "VALUES (?, ?, ?, ?, ?)",
                [(c.offset, c.key, c.value, _pack(c.headers), c.timestamp) for c in control],
            )
            for c in requests:
                self._copy_request(c)
            for request_id in answered:
                self._answered(request_id, now)
            self._db.execute("DELETE FROM answered WHERE seen_at < ?", (now - _ANSWERED_KEEP_S,))

    def _copy_request(self, c: Copy) -> None:
        seen = "SELECT 1 FROM answered WHERE request_id = ?"
        if self._db.execute(seen, (c.request_id,)).fetchone() is not None:
            return  # its result was read first (the worker reads topics side by side)
        self._db.execute(
            "INSERT OR IGNORE INTO requests (topic, partition, offset, request_id, key, value, "
            "headers, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (c.topic, c.partition, c.offset, c.request_id, c.key, c.value, _pack(c.headers),
             c.timestamp),
        )  # fmt: skip

    def _answered(self, request_id: str, now: float) -> None:
        gone = self._db.execute("DELETE FROM requests WHERE request_id = ?", (request_id,))
        if gone.rowcount == 0:
            self._db.execute("INSERT OR REPLACE INTO answered VALUES (?, ?)", (request_id, now))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _pack(headers: Headers) -> bytes:
    packed: bytes = msgpack.packb([[k, v] for k, v in headers], use_bin_type=True)
    return packed


def _unpack(blob: bytes) -> Headers:
    return [(str(k), v) for k, v in msgpack.unpackb(blob, raw=False)]


def _unreadable(path: Path, why: str) -> str:
    return (
        f"the journal {path} cannot be read ({why}). modelyard up will not start without it: "
        f"the routing state and unanswered requests it holds would be lost. Repair or move it "
        f"away, or pass --fresh to start over with an empty state"
    )
