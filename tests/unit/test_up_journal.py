"""The embedded engine's journal (``stack/journal.py``) and up's state dir, without a broker."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from modelyard.stack.journal import Copy, Journal, JournalError
from modelyard.stack.state_dir import StateDir, StateDirError

IN = "yard.p.docs.in"


def _request(offset: int, rid: str, partition: int = 0) -> Copy:
    headers: list[tuple[str, bytes | None]] = [("content-type", b"application/json"), ("x", None)]
    return Copy(IN, partition, offset, rid.encode(), b"{}", headers, 1700000000000, rid)


def _control(offset: int, seq: int) -> Copy:
    headers: list[tuple[str, bytes | None]] = [("modelyard-base-seq", str(seq - 1).encode())]
    return Copy("yard.control", 0, offset, b"docs", f'{{"seq": {seq}}}'.encode(), headers)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.sqlite3")


def test_requests_are_kept_until_their_result_is_seen(journal: Journal) -> None:
    journal.record([], [_request(0, "a"), _request(1, "b")], [])
    journal.record([], [], ["a"])
    [kept] = journal.unanswered()
    assert (kept.topic, kept.partition, kept.key, kept.value) == (IN, 0, b"b", b"{}")
    assert kept.headers == [("content-type", b"application/json"), ("x", None)]
    assert kept.timestamp == 1700000000000


def test_a_result_read_before_its_request_keeps_it_out(journal: Journal) -> None:
    journal.record([], [], ["early"])
    journal.record([], [_request(0, "early")], [])
    assert journal.unanswered() == []


def test_reading_a_record_twice_copies_it_once(journal: Journal) -> None:
    journal.record([_control(0, 1)], [_request(0, "a")], [])
    journal.record([_control(0, 1), _control(1, 2)], [_request(0, "a")], [])
    assert journal.counts() == (2, 1)


def test_control_records_keep_their_order_and_headers(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    first = Journal(path)
    first.record([_control(i, i + 1) for i in range(3)], [], [])
    first.close()
    kept = Journal(path).control_records()  # reopened: it is on disk
    assert [k.value for k in kept] == [b'{"seq": 1}', b'{"seq": 2}', b'{"seq": 3}']
    assert kept[2].headers == [("modelyard-base-seq", b"2")]


def test_after_a_restore_only_what_is_new_is_copied(journal: Journal) -> None:
    """A fresh broker holds what was restored at new offsets; its records at the old ones
    (a caller's new request) are new."""
    journal.record([_control(5, 1)], [_request(7, "a"), _request(8, "b")], [])
    [control] = journal.control_records()
    a, b = journal.unanswered()
    journal.moved([(control.id, 0)], [(a.id, 1, 0), (b.id, 1, 1)])
    journal.record([_control(0, 1)], [_request(0, "a", partition=1), _request(7, "new")], [])
    assert journal.counts() == (1, 3)
    assert [(k.partition, k.key) for k in journal.unanswered()] == [
        (1, b"a"), (1, b"b"), (0, b"new"),
    ]  # fmt: skip


def test_an_unreadable_journal_is_refused_with_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"garbage " * 1000)
    with pytest.raises(JournalError, match=r"cannot be read .*--fresh"):
        Journal(path)


def test_another_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE name = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="journal schema 99"):
        Journal(path)


def test_a_state_dir_runs_one_up_and_one_engine(tmp_path: Path) -> None:
    first = StateDir(tmp_path / "s", "embedded").open()
    with pytest.raises(StateDirError, match="another modelyard up"):
        StateDir(tmp_path / "s", "embedded").open()
    first.close()
    with pytest.raises(StateDirError, match="holds the embedded engine's state"):
        StateDir(tmp_path / "s", "kafka").open()
    (tmp_path / "s" / "journal.sqlite3").write_bytes(b"x")
    fresh = StateDir(tmp_path / "s", "kafka", fresh=True).open()
    assert not fresh.journal.exists()
    assert fresh.claims.is_dir()
    fresh.close()


def test_without_a_path_nothing_is_kept(tmp_path: Path) -> None:
    state = StateDir(None, "embedded").open()
    path = state.path
    assert not state.durable
    assert path.is_dir()
    state.close()
    assert not path.exists()
