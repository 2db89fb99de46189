"""How a batch's rows go into each database: per table, inserted ``ON CONFLICT DO NOTHING``
(every table has a natural unique key, so a record delivered again is inserted once).

- SQLite: multi-row inserts (``VALUES (...), (...), ...``, up to ``_SQLITE_ROWS`` rows each):
  the library releases the GIL once per statement instead of once per row, so the sink's
  reading thread, parsing the next batch meanwhile, does not hold the writer up row by row.
- PostgreSQL: the rows are copied (``COPY ... FROM STDIN``, text format) into a temporary table
  of the same columns, emptied at every commit, then moved with one ``INSERT ... SELECT ... ON
  CONFLICT DO NOTHING``: one round trip and one statement per table instead of one per row.

Both take the values ``tables.py`` describes (times as fixed-width UTC text, JSON as text) and
run inside the caller's transaction.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable
from typing import Any, Protocol

from modelyard.audit.store.dialect import Dialect
from modelyard.audit.store.tables import TABLES, Table, Values

__all__ = ["TableWriter", "insert_sql", "writer_for"]

_SQLITE_ROWS = 5000  # rows per SQLite insert statement at most (and bound values within limit)


class TableWriter(Protocol):
    def ready(self, conn: Any) -> None:
        """Set the connection up for writing (outside any transaction); idempotent."""

    def write(self, conn: Any, tables: Iterable[tuple[Table, list[Values]]]) -> None:
        """Insert each table's rows (inside the caller's transaction)."""


def writer_for(dialect: Dialect) -> TableWriter:
    return _SqliteWriter(dialect.marker) if dialect.name == "sqlite" else _CopyWriter()


def insert_sql(table: Table, marker: str, rows: int = 1) -> str:
    """``INSERT INTO table (columns) VALUES (markers), ... ON CONFLICT DO NOTHING``."""
    columns = ", ".join(table.columns)
    one = "(" + ", ".join([marker] * len(table.columns)) + ")"
    values = ", ".join([one] * rows)
    return f"INSERT INTO {table.name} ({columns}) VALUES {values} ON CONFLICT DO NOTHING"  # noqa: S608


class _SqliteWriter:
    def __init__(self, marker: str) -> None:
        self._marker = marker
        self._per: dict[str, int] = {}  # rows per statement, per table

    def ready(self, conn: Any) -> None:
        if self._per:
            return
        most = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._per = {t.name: max(1, min(_SQLITE_ROWS, most // len(t.columns))) for t in TABLES}

    def write(self, conn: Any, tables: Iterable[tuple[Table, list[Values]]]) -> None:
        cursor = conn.cursor()
        for table, rows in tables:
            start = 0
            for size, count in _statement_sizes(len(rows), self._per[table.name]):
                # each size's text is prepared once and then cached by the module: the rows
                # past whole chunks go in power-of-two statements, so batches cut short by a
                # deadline (any length) reuse a handful of texts instead of preparing new ones
                end = start + size * count
                chunks = (_flat(rows[i : i + size]) for i in range(start, end, size))
                cursor.executemany(insert_sql(table, self._marker, size), chunks)
                start = end


def _statement_sizes(rows: int, per: int) -> list[tuple[int, int]]:
    """(rows per statement, statements) covering ``rows``: whole ``per`` chunks, then the rest
    in decreasing powers of two."""
    sizes = [(per, rows // per)] if rows >= per else []
    rest = rows % per if rows >= per else rows
    while rest:
        size = 1 << (rest.bit_length() - 1)
        sizes.append((size, 1))
        rest -= size
    return sizes


def _flat(rows: list[Values]) -> Values:
    return tuple(itertools.chain.from_iterable(rows))


class _CopyWriter:
    """COPY into ``staging_<table>`` (a temporary table: this session's only), then insert."""

    def __init__(self) -> None:
        self._ready_on: int | None = None  # id() of the connection the staging tables are on

    def ready(self, conn: Any) -> None:
        if self._ready_on == id(conn):
            return
        cursor = conn.cursor()
        for table in TABLES:  # names from tables.py, not from input
            cursor.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {_staging(table)} ON COMMIT DELETE ROWS "  # noqa: S608
                f"AS SELECT {', '.join(table.columns)} FROM {table.name} WITH NO DATA"
            )
        self._ready_on = id(conn)

    def write(self, conn: Any, tables: Iterable[tuple[Table, list[Values]]]) -> None:
        cursor = conn.cursor()
        for table, rows in tables:
            columns = ", ".join(table.columns)
            staging = _staging(table)
            with cursor.copy(f"COPY {staging} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(
                f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {staging} "  # noqa: S608
                "ON CONFLICT DO NOTHING"
            )


def _staging(table: Table) -> str:
    return f"staging_{table.name}"
