"""The store's tables as the hot path sees them: names, column order, and how each value is
converted on the way in and out (the schema itself lives in the alembic migrations).

Columns follow the row dataclasses (``rows.py``) field by field, ``id`` and ``kind`` aside, so
an insert is ``INSERT ... VALUES`` of a tuple in that order (``Values``) and a select builds a
row from one. Both databases are written the same values: a time as fixed-width UTC text
(``store_time``; PostgreSQL reads it into ``timestamptz``), a JSON column as compact text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from modelyard.audit.store.rows import (
    CheckpointRow,
    ControlChangeRow,
    HopRow,
    PayloadRow,
    RequestRow,
)

__all__ = [
    "CHECKPOINTS",
    "CONTROL",
    "HOPS",
    "PAYLOADS",
    "REQUESTS",
    "TABLES",
    "TIMES",
    "Table",
    "Values",
    "dump_json",
    "store_time",
]

Values = tuple[Any, ...]  # one row's column values, in its table's column order

TIMES = frozenset({"received_at", "finished_at", "dispatched_at", "at"})
BOOLS = frozenset({"shadow", "agrees"})
# SQLite keeps whatever type a value was written with: bytes tampered into text still read as
# the bytes they spell, so verify hashes what is there
BYTES = frozenset({"raw", "result_fields", "fields"})
_JSON_DECODED: dict[str, Callable[[Any], Any]] = {
    "served_by": dict,
    "skipped": tuple,
    "what": lambda v: v,
}


def dump_json(value: Any) -> str:
    """How a JSON column is stored: compact, keys sorted."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def store_time(value: datetime) -> str:
    """How the store is given a time: UTC text of fixed width, so it sorts and compares as
    text in SQLite."""
    return value.astimezone(UTC).isoformat(" ", "microseconds")


def _load_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


@dataclass(frozen=True)
class Table:
    """One table: its name, the row type, the columns written (row order, no ``id``)."""

    name: str
    row: type[Any]
    columns: tuple[str, ...]

    @property
    def selected(self) -> tuple[str, ...]:
        """The columns a select reads: ``id`` first, then the written ones."""
        return ("id", *self.columns)

    def positions(self, names: frozenset[str]) -> tuple[int, ...]:
        """Where the ``names`` columns sit in a written tuple."""
        return tuple(i for i, c in enumerate(self.columns) if c in names)

    def dump(self, row: Any) -> Values:
        """The values a row's insert binds (times as ``store_time``, JSON columns as text)."""
        out = list(attrgetter(*self.columns)(row))
        for i, name in enumerate(self.columns):
            value = out[i]
            if value is None:
                continue
            if name in TIMES:
                out[i] = store_time(value)
            elif name in _JSON_DECODED:
                out[i] = dump_json(value)
        return tuple(out)

    def load(self, values: Values) -> Any:
        """The row (``id`` 0) that ``values`` give once stored and read back."""
        return self.build((0, *values), _load_time)

    def build(self, values: tuple[Any, ...], load_time: Callable[[Any], Any]) -> Any:
        """A row from a selected tuple (``id`` first), times read by the dialect's ``load_time``."""
        out = list(values)
        for i, name in enumerate(self.selected):
            value = out[i]
            if value is None:
                continue
            if name in TIMES:
                out[i] = load_time(value)
            elif name in BOOLS:
                out[i] = bool(value)
            elif name in BYTES and isinstance(value, str):
                out[i] = value.encode()
            elif name in _JSON_DECODED:
                out[i] = _JSON_DECODED[name](json.loads(value))
        return self.row(*out)


def _table(name: str, row: type[Any]) -> Table:
    columns = tuple(f.name for f in fields(row) if f.name not in ("id", "kind"))
    return Table(name, row, columns)


REQUESTS = _table("requests", RequestRow)
HOPS = _table("hops", HopRow)
PAYLOADS = _table("payloads", PayloadRow)
CHECKPOINTS = _table("checkpoints", CheckpointRow)
CONTROL = _table("control_changes", ControlChangeRow)
TABLES = (REQUESTS, HOPS, PAYLOADS, CHECKPOINTS, CONTROL)  # the order a batch writes them in
