"""The two databases behind one store: how to connect, bind, and store a time.

SQLite (the embedded default: one file, WAL) and PostgreSQL (production, psycopg 3) speak the
same SQL here (``INSERT ... ON CONFLICT DO NOTHING``, partial unique indexes); they differ in
the parameter marker, in how a time is kept (ISO text in SQLite, ``timestamptz`` in
PostgreSQL) and in null-safe equality. The hot path uses their DB-API drivers directly;
SQLAlchemy is only alembic's engine (``migrate.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelyard.audit.store.tables import store_time
from modelyard.errors import ConfigError, UnavailableError

__all__ = ["Dialect", "dialect_for", "redact_url"]

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://", "postgresql+psycopg://")


@dataclass(frozen=True)
class Dialect:
    """How to reach one store and speak to it."""

    name: str  # "sqlite" or "postgresql"
    target: str  # a file path (SQLite) or a libpq DSN (PostgreSQL)
    marker: str  # the DB-API parameter marker
    same: str  # null-safe equality operator

    @property
    def sqlalchemy_url(self) -> str:
        if self.name == "sqlite":
            return f"sqlite:///{self.target}"
        return "postgresql+psycopg://" + self.target.split("://", 1)[1]

    def connect(self) -> Any:
        """A new DB-API connection in autocommit mode: writes use ``transaction``."""
        import psycopg  # noqa: PLC0415  # only PostgreSQL stores need the driver loaded

        try:
            if self.name == "sqlite":
                return _sqlite_connect(self.target)
            return psycopg.connect(self.target, autocommit=True)
        except (sqlite3.Error, psycopg.Error) as exc:
            where = redact_url(self.target)
            raise UnavailableError(f"cannot open audit store {where}: {exc}") from None

    @contextmanager
    def transaction(self, conn: Any) -> Iterator[None]:
        """One transaction on a connection from ``connect``: committed when the block ends,
        rolled back when it raises."""
        if self.name != "sqlite":
            with conn.transaction():
                yield
            return
        conn.execute("BEGIN IMMEDIATE")  # take the write lock now, not halfway through
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def dump_time(self, value: datetime) -> Any:
        """A time as the column keeps it."""
        if self.name == "sqlite":  # fixed width, UTC: sorts and compares as text
            return store_time(value)
        return value

    def load_time(self, value: Any) -> datetime:
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return datetime.fromisoformat(str(value)).astimezone(UTC)


def dialect_for(url: str) -> Dialect:
    """The dialect of a store URL: ``sqlite:///path``, a plain path, or ``postgresql://...``."""
    if url.startswith(_POSTGRES_PREFIXES):
        dsn = "postgresql://" + url.split("://", 1)[1]
        return Dialect("postgresql", dsn, "%s", "IS NOT DISTINCT FROM")
    if url.startswith(_SQLITE_PREFIX):
        path = url[len(_SQLITE_PREFIX) :]
    elif "://" in url:
        raise ConfigError(
            f"unknown audit store {redact_url(url)!r}: use sqlite:///PATH, a file path, "
            "or postgresql://..."
        )
    else:
        path = url
    if not path:
        raise ConfigError("the audit store's SQLite path is empty")
    return Dialect("sqlite", str(Path(path)), "?", "IS")


def redact_url(url: str) -> str:
    """``url`` with any password replaced, for messages and logs."""
    if "://" not in url or "@" not in url.split("://", 1)[1]:
        return url
    scheme, rest = url.split("://", 1)
    userinfo, host = rest.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in userinfo else url


def _sqlite_connect(path: str) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
    # WAL: readers (query, verify) never block the sink; NORMAL: a committed batch survives
    # the process being killed (not a power cut: PostgreSQL is the production store)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn
