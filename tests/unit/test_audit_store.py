"""The audit store on SQLite: schema by migration, idempotent batches, queries, payloads for
replay, and verify/prove over real chained records (each tamper case reported where it is)."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from modelyard.audit.chain import AuditChain, record_hash
from modelyard.audit.prove import prove_request
from modelyard.audit.store import (
    HEAD,
    AuditStore,
    Batch,
    Filters,
    current_version,
    migrate,
    open_store,
    parse_record,
)
from modelyard.audit.store.writes import _statement_sizes
from modelyard.audit.verify import verify_store
from modelyard.control import ControlRecord, ControlState, Rollout, encode_record, make_record
from modelyard.control.chain import Positioned
from modelyard.control.verify import ControlVerifier
from modelyard.errors import ConfigError, DecodeError
from modelyard.keys import Keyring, SigningKey
from modelyard.sink.control import ControlFold

from tests.support.audit_records import RecordMaker, writer_keyring

KEY = SigningKey.generate("router")


def _store(tmp_path: Path) -> AuditStore:
    return open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=True)


def _fill(store: AuditStore, count: int = 10, every: int = 6, writer: str = "w1") -> list[bytes]:
    """``count`` requests (hop + request each) on partition 0, a checkpoint every ``every``."""
    maker = RecordMaker(AuditChain(writer, KEY, every_records=every, every_s=3600))
    values = maker.many(0, count).values
    _write(store, values)
    return values


def _write(store: AuditStore, values: list[bytes]) -> None:
    batch = Batch()
    for value in values:
        batch.add(parse_record(value))
    store.write(batch)


def _problems(
    store: AuditStore, keyring: Keyring | None = None
) -> list[tuple[str, int | None, str | None]]:
    report = verify_store(store, writer_keyring(KEY) if keyring is None else keyring)
    return [(p.kind, p.seq, p.table) for p in report.problems]


def _count(store: AuditStore, table: str) -> int:
    path = store.dialect.target
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# schema and writes -------------------------------------------------------------------------
def test_migrate_creates_the_schema_once_and_records_its_version(tmp_path: Path) -> None:
    url = str(tmp_path / "a.db")
    assert current_version(url) is None
    assert migrate(url) == HEAD
    assert migrate(url) == HEAD  # again: nothing to do
    with sqlite3.connect(url) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert {"requests", "hops", "payloads", "checkpoints", "control_changes"} <= tables
    assert "audit_schema_version" in tables
    assert mode == "wal" or open_store(url).dialect.name == "sqlite"


def test_open_refuses_a_store_never_migrated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="audit migrate"):
        open_store(str(tmp_path / "none.db"))


def test_writing_a_batch_twice_stores_each_record_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    values = _fill(store, count=5, every=4)
    _write(store, values)  # redelivered
    assert (_count(store, "hops"), _count(store, "requests")) == (5, 5)
    assert _count(store, "payloads") == 10  # input and output per hop
    assert _count(store, "checkpoints") == 2


def test_unchained_records_are_idempotent_by_what_they_describe(tmp_path: Path) -> None:
    store = _store(tmp_path)
    maker = RecordMaker(AuditChain("w1", None))
    hop, request = (json.loads(v) for v in maker.request(0, "r1"))
    for body in (hop, request):
        del body["chain"]
    values = [json.dumps(hop).encode(), json.dumps(request).encode()]
    _write(store, values)
    _write(store, values)
    assert (_count(store, "hops"), _count(store, "requests"), _count(store, "payloads")) == (
        1,
        1,
        2,
    )


@pytest.mark.parametrize(
    "value",
    [b"not json", b'{"schema":2,"kind":"hop"}', b'{"schema":1,"kind":"spaceship"}',
     b'{"schema":1,"kind":"request","request_id":"r"}',
     b'{"schema":1,"kind":"checkpoint","writer":"w","partition":"0"}'],
)  # fmt: skip
def test_invalid_records_are_refused(value: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_record(value)


# queries ---------------------------------------------------------------------------------
def test_query_filters(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store, count=4)
    other = RecordMaker(AuditChain("w2", KEY), pipeline="ocr", principal="bob")
    _write(store, other.request(1, "x1"))
    rows = list(store.query(Filters()))
    assert len(rows) == 10
    assert [r.received_at if r.kind == "request" else r.dispatched_at for r in rows] == sorted(
        r.received_at if r.kind == "request" else r.dispatched_at for r in rows
    )
    assert {r.request_id for r in store.query(Filters(principal="bob"))} == {"x1"}
    assert {r.kind for r in store.query(Filters(pipeline="ocr"))} == {"hop", "request"}
    hops = list(store.query(Filters(stage="sentiment", version="2", role="active")))
    assert len(hops) == 5
    assert {r.kind for r in hops} == {"hop"}
    assert list(store.query(Filters(model="nope"))) == []
    assert [r.kind for r in store.query(Filters(request_id="r2", kinds=("request",)))] == [
        "request"
    ]
    assert len(list(store.query(Filters(limit=3)))) == 3
    first = rows[0].received_at if rows[0].kind == "request" else rows[0].dispatched_at
    assert list(store.query(Filters(until=first))) == []
    assert len(list(store.query(Filters(since=first + timedelta(days=1))))) == 0
    assert len(list(store.query(Filters(outcome="ok")))) == 10


def test_request_row_carries_principal_auth_and_result(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store, count=1)
    (row,) = store.query(Filters(kinds=("request",)))
    assert row.kind == "request"
    assert (row.principal, row.auth, row.served_by) == (
        "alice",
        "token",
        {"sentiment": "sentiment:2"},
    )
    assert row.result_fields is not None
    assert row.result_bytes == len(row.result_fields)


def test_hop_payloads_decode_the_captured_fields(tmp_path: Path) -> None:
    store = _store(tmp_path)
    maker = RecordMaker(AuditChain("w1", None))
    _write(store, maker.request(0, "g", text="good day") + maker.request(0, "b", text="awful"))
    got = list(store.hop_payloads(Filters(), "sentiment"))
    assert [tuple(p) for p in got] == [
        ("g", {"text": "good day"}, {"label": "pos"}, "sentiment", "2"),
        ("b", {"text": "awful"}, {"label": "neg"}, "sentiment", "2"),
    ]
    assert list(store.hop_payloads(Filters(), "translate")) == []
    assert [p.request_id for p in store.hop_payloads(Filters(request_id="b"), "sentiment")] == ["b"]


# verify ----------------------------------------------------------------------------------
def test_verify_an_untouched_store(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store, count=10, every=6)  # 20 records: checkpoints at seq 5, 11, 17
    report = verify_store(store, writer_keyring(KEY))
    assert report.ok, report.lines()
    (tail,) = report.tails
    assert (tail.first, tail.last, tail.count) == (18, 19, 2)
    (chain,) = report.chains
    assert (chain.records, chain.checkpoints, chain.signed_to) == (20, 3, 17)


def test_verify_catches_an_edited_column(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store)
    store.execute("UPDATE hops SET outcome = 'model' WHERE chain_seq = 4")
    assert _problems(store) == [("edited", 4, "hops")]


def test_verify_catches_edited_bytes_even_when_every_column_agrees(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store)
    (row,) = store.chain_segment("w1", 0, 7, 7)  # a request record
    forged = row.raw.replace(b'"outcome":"ok"', b'"outcome":"permission_denied"')
    store.execute(
        "UPDATE requests SET raw = %s, outcome = 'permission_denied', chain_hash = %s "
        "WHERE id = %s",
        [forged, record_hash(forged), row.id],
    )
    assert _problems(store) == [("edited", 7, "requests")]


def test_verify_catches_a_deleted_row(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store)
    store.execute("DELETE FROM hops WHERE chain_seq = 6")
    report = verify_store(store, writer_keyring(KEY))
    assert [(p.kind, p.seq, p.last_seq) for p in report.problems] == [("deleted", 6, 5 + 1)]


def test_verify_catches_an_inserted_row(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store)
    (before,) = store.chain_segment("w1", 0, 1, 1)
    (genuine,) = store.chain_segment("w1", 0, 3, 3)  # a request; forge another at seq 2
    body = json.loads(genuine.raw)
    body["request_id"] = "forged"
    body["chain"] = {"writer": "w1", "partition": 0, "seq": 2, "prev": record_hash(before.raw)}
    _write(store, [json.dumps(body, separators=(",", ":")).encode()])
    report = verify_store(store, writer_keyring(KEY))
    assert [(p.kind, p.seq, p.table) for p in report.problems] == [("inserted", 2, "requests")]
    (forged,) = store.query(Filters(request_id="forged"))
    assert report.problems[0].row_id == forged.id


def test_verify_catches_reordered_rows(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store)
    store.execute("UPDATE hops SET chain_seq = -1 WHERE chain_seq = 2")
    store.execute("UPDATE hops SET chain_seq = 2 WHERE chain_seq = 8")
    store.execute("UPDATE hops SET chain_seq = 8 WHERE chain_seq = -1")
    kinds = sorted((p.kind, p.seq) for p in verify_store(store, writer_keyring(KEY)).problems)
    assert kinds == [("reordered", 2), ("reordered", 8)]


def test_verify_catches_an_edited_payload(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store)
    store.execute("UPDATE payloads SET bytes = 1 WHERE chain_seq = 4 AND direction = 'output'")
    assert _problems(store) == [("edited", 4, "payloads")]


def test_verify_rejects_checkpoints_of_unknown_or_non_writer_keys(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store, count=3, every=6)  # one checkpoint at seq 5
    assert _problems(store, Keyring()) == [("checkpoint", 5, "checkpoints")]
    operator = Keyring([KEY.public_entry("operator", ["docs"])])
    assert _problems(store, operator) == [("checkpoint", 5, "checkpoints")]


def test_verify_reports_unchained_rows(tmp_path: Path) -> None:
    store = _store(tmp_path)
    hop, _ = (json.loads(v) for v in RecordMaker(AuditChain("w1", None)).request(0, "u"))
    del hop["chain"]
    _write(store, [json.dumps(hop).encode()])
    assert _problems(store) == [("unchained", None, "hops")]


# prove -----------------------------------------------------------------------------------
def test_prove_a_request_in_a_signed_chain(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store, count=10, every=6)
    proof = prove_request(store, writer_keyring(KEY), "r1")  # seq 2 (hop) and 3 (request)
    text = "\n".join(proof.lines)
    assert proof.proven, text
    assert "writer=w1 partition=0 seq=2" in text
    assert "seq=3" in text
    assert "links 2..5" in text
    assert "checkpoint seq=5" in text
    assert "VERIFIED" in text


def test_prove_fails_in_the_unsigned_tail_and_on_a_broken_link(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _fill(store, count=10, every=6)
    assert not prove_request(store, writer_keyring(KEY), "r9").proven  # seq 18, 19: unsigned
    store.execute("UPDATE requests SET raw = raw || X'20' WHERE chain_seq = 3")
    proof = prove_request(store, writer_keyring(KEY), "r1")
    assert not proof.proven
    assert any("BROKEN LINK" in line for line in proof.lines)


# control verdicts ----------------------------------------------------------------------------
class _Message:
    """The part of a consumed control message the sink reads."""

    def __init__(self, offset: int, value: bytes, key: bytes = b"docs") -> None:
        self._offset, self._value, self._key = offset, value, key

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return 0

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key

    def headers(self) -> list[tuple[str, bytes]]:
        return []


def _control_records() -> list[ControlRecord]:
    first = make_record(ControlState().pipeline("docs"), Rollout(stage="s", version="1"),
                        actor="ops")  # fmt: skip
    return [first, make_record(first.state, Rollout(stage="s", version="2"), actor="ops")]


def test_without_a_keyring_control_records_are_unverified_never_accepted() -> None:
    records = _control_records()
    reads: list[int] = []

    def history() -> list[Positioned]:
        reads.append(1)
        return [Positioned(i, r) for i, r in enumerate(records)]

    fold = ControlFold(ControlVerifier(None), history)
    rows = [fold.row(_Message(i, encode_record(r))) for i, r in enumerate(records)]
    assert [(r.verdict, r.seq, r.who) for r in rows] == [("unverified", 1, "ops"),
                                                         ("unverified", 2, "ops")]  # fmt: skip
    assert rows[0].reason is not None
    assert "no keyring" in rows[0].reason
    assert len(reads) == 1  # folded from the first offset once, then message by message
    again = fold.row(_Message(1, encode_record(records[1])))
    assert again.verdict == "unverified"
    assert len(reads) == 2  # a redelivered message: folded again up to it
    bad = fold.row(_Message(2, b"{}"))
    assert bad.verdict == "rejected"
    assert bad.reason is not None
    assert bad.reason.startswith("invalid: ")


@pytest.mark.parametrize("rows", [0, 1, 5, 1999, 2000, 2001, 4099])
def test_sqlite_statements_cover_every_row_once_in_few_shapes(rows: int) -> None:
    sizes = _statement_sizes(rows, 2000)
    assert sum(size * count for size, count in sizes) == rows
    # whole chunks, then distinct powers of two: a handful of statement texts, whatever the batch
    assert all(size == 2000 or size & (size - 1) == 0 for size, _ in sizes)
    assert len({size for size, _ in sizes}) == len(sizes)
