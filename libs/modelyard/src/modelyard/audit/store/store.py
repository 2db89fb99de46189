"""The audit store: one interface over SQLite and PostgreSQL (``open_store(url)``).

Writes come in batches (``Batch``), each one transaction that inserts each table's rows with
``ON CONFLICT DO NOTHING`` (``writes.py``: ``executemany`` in SQLite, ``COPY`` through a
temporary table in PostgreSQL), so a record delivered again is inserted once. Reads are iterators of
frozen rows (``rows.py``): ``query`` for ``modelyard audit query`` and ``trace``, ``hop_payloads``
for ``modelyard replay``, and the ordered walks ``verify`` and ``prove`` need.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import msgpack

from modelyard.audit.store.dialect import Dialect, dialect_for, redact_url
from modelyard.audit.store.migrate import current_version, migrate
from modelyard.audit.store.parse import Parsed, record_values
from modelyard.audit.store.rows import (
    CheckpointRow,
    ControlChangeRow,
    Filters,
    HopPayload,
    HopRow,
    PayloadRow,
    RequestRow,
)
from modelyard.audit.store.tables import (
    CHECKPOINTS,
    CONTROL,
    HOPS,
    PAYLOADS,
    REQUESTS,
    TABLES,
    Table,
    Values,
)
from modelyard.audit.store.writes import writer_for
from modelyard.errors import ConfigError
from modelyard.wire.envelope import unpack_arrays

__all__ = ["AuditStore", "Batch", "open_store"]

_FETCH = 1000
_WALKS = ((REQUESTS, "received_at", "request"), (HOPS, "dispatched_at", "hop"))


class Batch:
    """Rows to write in one transaction, as the values their inserts bind, per table.

    ``add_record`` takes an audit record's bytes (the sink's path: no row objects),
    ``add`` rows already parsed, ``add_control`` a control-topic row.
    """

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: dict[str, list[Values]] = {table.name: [] for table in TABLES}

    def add_record(self, raw: bytes) -> None:
        """The rows of one audit record (``DecodeError``, nothing added, when it is not one)."""
        table, values, payloads = record_values(raw)
        self.rows[table].append(values)
        if payloads:
            self.rows[PAYLOADS.name].extend(payloads)

    def add(self, parsed: Parsed) -> None:
        for table, row in ((REQUESTS, parsed.request), (HOPS, parsed.hop),
                           (CHECKPOINTS, parsed.checkpoint)):  # fmt: skip
            if row is not None:
                self.rows[table.name].append(table.dump(row))
        self.rows[PAYLOADS.name].extend(PAYLOADS.dump(p) for p in parsed.payloads)

    def add_control(self, row: ControlChangeRow) -> None:
        self.rows[CONTROL.name].append(CONTROL.dump(row))

    def count(self, table: str) -> int:
        """Rows for the table named ``table``."""
        return len(self.rows[table])

    def __len__(self) -> int:
        """Records: rows of every table but payloads (a hop's payloads come with it)."""
        return sum(len(rows) for name, rows in self.rows.items() if name != PAYLOADS.name)

    def tables(self) -> Iterator[tuple[Table, list[Values]]]:
        """Each table with rows to write, in ``TABLES`` order."""
        for table in TABLES:
            rows = self.rows[table.name]
            if rows:
                yield table, rows


def open_store(url: str, *, create: bool = False) -> AuditStore:
    """The store at ``url`` (``sqlite:///PATH``, a plain path, or ``postgresql://...``).

    ``create``: migrate it to the newest schema first (the sink does); otherwise a store that
    was never migrated is a ``ConfigError`` telling to run ``modelyard audit migrate``.
    """
    dialect = dialect_for(url)
    if create:
        migrate(url)
    elif current_version(url) is None:
        raise ConfigError(
            f"{redact_url(url)} holds no audit store: run `modelyard audit migrate --store ...` "
            "or start `modelyard audit-sink`, which creates it"
        )
    return AuditStore(dialect)


class AuditStore:
    """One connection to one store. Not shared between threads at once."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._conn = dialect.connect()
        self._writer = writer_for(dialect)

    @property
    def url(self) -> str:
        """Where the store is, password hidden."""
        return redact_url(self.dialect.sqlalchemy_url)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # writing -------------------------------------------------------------------------------
    def write(self, batch: Batch) -> None:
        """Insert the batch in one transaction; rows already there are left as they are."""
        self._writer.ready(self._conn)
        with self.dialect.transaction(self._conn):
            self._writer.write(self._conn, batch.tables())

    # reading -------------------------------------------------------------------------------
    def query(self, filters: Filters) -> Iterator[RequestRow | HopRow]:
        """Requests and hops matching ``filters``, oldest first (see ``Filters``)."""
        walks: list[Iterator[Any]] = []
        limit = filters.limit
        for table, when, kind in _WALKS:
            if kind in filters.kinds and not (kind == "request" and filters.hop_only):
                where, params = _where(filters, when, self.dialect)
                walks.append(self._select(table, f"{where} ORDER BY {when}, id", params, limit))
        merged = heapq.merge(*walks, key=_when)
        yield from itertools.islice(merged, filters.limit)

    def hop_payloads(self, filters: Filters, stage: str) -> Iterator[HopPayload]:
        """The captured input (and output, when captured) of each hop of ``stage`` matching
        ``filters`` whose input fields were kept, oldest first, decoded."""
        hop_filters = Filters(**{**_as_dict(filters), "stage": stage, "kinds": ("hop",)})
        clauses, params = _where(hop_filters, "dispatched_at", self.dialect, alias="h.")
        same = self.dialect.same
        sql = (
            "SELECT h.request_id, i.fields, o.fields, h.model, h.version FROM hops h "  # noqa: S608
            f"JOIN payloads i ON i.direction = 'input' AND {_joined('i', same)} "
            f"LEFT JOIN payloads o ON o.direction = 'output' AND {_joined('o', same)} "
            f"WHERE i.fields IS NOT NULL AND {clauses} ORDER BY h.dispatched_at, h.id"
        )
        for request_id, inputs, outputs, model, version in self._rows(sql, params, filters.limit):
            yield HopPayload(request_id, _unpack(inputs), _unpack_or_none(outputs), model, version)

    def chain_rows(self) -> Iterator[RequestRow | HopRow]:
        """Every request and hop row, ordered by (writer, partition, seq, id); unchained rows
        (no writer) first."""
        order = " ORDER BY chain_writer, chain_partition, chain_seq, id"
        walks = [self._select(t, "1=1" + order, []) for t in (REQUESTS, HOPS)]
        return heapq.merge(*walks, key=_position)

    def payload_rows(self) -> Iterator[PayloadRow]:
        """Every payload row, ordered as ``chain_rows`` orders their hops."""
        order = "1=1 ORDER BY chain_writer, chain_partition, chain_seq, request_id, stage, id"
        return self._select(PAYLOADS, order, [])

    def checkpoints(self, writer: str | None = None) -> list[CheckpointRow]:
        """Checkpoints (of ``writer``), ordered by (writer, partition, seq)."""
        where, params = ("writer = %s", [writer]) if writer is not None else ("1=1", [])
        order = " ORDER BY writer, chain_partition, seq, id"
        return list(self._select(CHECKPOINTS, self._marked(where) + order, params))

    def control_changes(self, pipeline: str | None = None) -> list[ControlChangeRow]:
        """Control records as the sink stored them, in topic order."""
        where, params = ("pipeline = %s", [pipeline]) if pipeline is not None else ("1=1", [])
        order = " ORDER BY topic_partition, topic_offset"
        return list(self._select(CONTROL, self._marked(where) + order, params))

    def chain_segment(
        self, writer: str, partition: int, first: int, last: int
    ) -> list[RequestRow | HopRow]:
        """The rows of one chain from seq ``first`` to ``last``, in seq order."""
        where = self._marked(
            "chain_writer = %s AND chain_partition = %s AND chain_seq BETWEEN %s AND %s"
        )
        params = [writer, partition, first, last]
        order = " ORDER BY chain_seq, id"
        walks = [self._select(t, where + order, params) for t in (REQUESTS, HOPS)]
        return list(heapq.merge(*walks, key=_position))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement in its own transaction (tests and tools that tamper on purpose)."""
        with self.dialect.transaction(self._conn):
            self._conn.cursor().execute(self._marked(sql), list(params))

    # internals -----------------------------------------------------------------------------
    def _marked(self, sql: str) -> str:
        return sql.replace("%s", self.dialect.marker)

    def _select(
        self, table: Table, where: str, params: Sequence[Any], limit: int | None = None
    ) -> Iterator[Any]:
        # names come from tables.py and clauses from _where; every value is bound
        sql = f"SELECT {', '.join(table.selected)} FROM {table.name} WHERE {where}"  # noqa: S608
        load = self.dialect.load_time
        for values in self._rows(sql, params, limit):
            yield table.build(values, load)

    def _rows(self, sql: str, params: Sequence[Any], limit: int | None) -> Iterator[Any]:
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cursor = self._conn.cursor()
        cursor.execute(sql, list(params))
        while batch := cursor.fetchmany(_FETCH):
            yield from batch


def _joined(payload: str, same: str) -> str:
    """Joins a hop to its payload rows: same hop, same chain position (or both unchained)."""
    eq = [f"{payload}.{c} = h.{c}" for c in ("request_id", "stage", "attempt", "role")]
    chained = [
        f"{payload}.{c} {same} h.{c}" for c in ("chain_writer", "chain_partition", "chain_seq")
    ]
    return " AND ".join(eq + chained)


def _where(
    filters: Filters, time_column: str, dialect: Dialect, alias: str = ""
) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters of ``filters`` over requests or hops."""
    clauses, params = [], []
    hop = time_column == "dispatched_at"
    names = ["request_id", "principal", "pipeline", "outcome"]
    names += ["stage", "model", "version", "role"] if hop else []
    for name in names:
        value = getattr(filters, name)
        if value is not None:
            clauses.append(f"{alias}{name} = {dialect.marker}")
            params.append(value)
    for value, op in ((filters.since, ">="), (filters.until, "<")):
        if value is not None:
            clauses.append(f"{alias}{time_column} {op} {dialect.marker}")
            params.append(dialect.dump_time(value))
    return " AND ".join(clauses) or "1=1", params


def _when(row: RequestRow | HopRow) -> Any:
    return row.received_at if isinstance(row, RequestRow) else row.dispatched_at


def _position(row: RequestRow | HopRow) -> tuple[Any, ...]:
    writer = row.chain_writer
    return (writer is not None, writer or "", row.chain_partition or 0, row.chain_seq or 0, row.id)


def _as_dict(filters: Filters) -> dict[str, Any]:
    return {name: getattr(filters, name) for name in Filters.__dataclass_fields__}


def _unpack(fields: bytes) -> dict[str, Any]:
    value = msgpack.unpackb(fields, raw=False, strict_map_key=True)
    if not isinstance(value, dict):
        raise ValueError("captured fields are not a map")
    return unpack_arrays(value)


def _unpack_or_none(fields: bytes | None) -> dict[str, Any] | None:
    return None if fields is None else _unpack(fields)
