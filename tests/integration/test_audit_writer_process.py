"""The audit sink's writer process (``audit/store/process.py``) against a real SQLite store: it
writes what it is sent, says so when a batch fails, and a dead child is an error, not a hang."""

from __future__ import annotations

import os
import signal
from http import HTTPMethod
from pathlib import Path

import pytest
from modelyard.audit.records import encode_hop_record
from modelyard.audit.store import Batch, open_store
from modelyard.audit.store.process import StoreWriteError, WriterProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    open_store(url, create=True).close()
    return url


def hop_record(request_id: str) -> bytes:
    return encode_hop_record(
        request_id=request_id, pipeline="docs", caller="alice", trace_id="ab" * 16,
        outcome="ok", error=None, stage="sentiment", model="sentiment", version="2",
        role="active", shadow=False, attempt=0, span_id="cd" * 8, dispatched_at=1.8e9,
        finished_at=1.8e9 + 0.004, latency_ms=4.0, input_digest="12" * 32,
        output_digest="34" * 32,
    )  # fmt: skip


def _batch(*request_ids: str) -> Batch:
    batch = Batch()
    for request_id in request_ids:
        batch.add_record(hop_record(request_id))
    return batch


def _hops(url: str) -> list[str]:
    with open_store(url) as store:
        conn = store.dialect.connect()
        try:
            return [row[0] for row in conn.execute("SELECT request_id FROM hops ORDER BY id")]
        finally:
            conn.close()


def test_batches_sent_ahead_are_written_in_order(url: str) -> None:
    writer = WriterProcess(url)
    try:
        writer.submit(_batch("r1", "r2"))
        writer.submit(_batch("r3"))  # before the first is answered, as the sink does under load
        writer.result()
        writer.result()
        writer.write(_batch("r1"))  # delivered again: inserted once
    finally:
        writer.close()
    assert _hops(url) == ["r1", "r2", "r3"]


def test_a_batch_marshal_refuses_goes_by_pickle_and_is_written(url: str) -> None:
    batch = _batch("r1")
    row = batch.rows["hops"][0]
    # a StrEnum member is a str subclass: marshal refuses it, pickle takes it
    batch.rows["hops"][0] = (HTTPMethod.GET, *row[1:])
    writer = WriterProcess(url)
    try:
        writer.write(batch)
        writer.write(_batch("r3"))  # and the next, by marshal
    finally:
        writer.close()
    assert _hops(url) == ["GET", "r3"]


def test_a_batch_the_store_refuses_is_an_error_and_the_next_is_written(url: str) -> None:
    bad = _batch("r1")
    bad.rows["hops"] = [("too", "few", "values")]
    writer = WriterProcess(url)
    try:
        with pytest.raises(StoreWriteError, match="refused"):
            writer.write(bad)
        writer.write(_batch("r2"))
    finally:
        writer.close()
    assert _hops(url) == ["r2"]


def test_a_writer_that_died_is_an_error_not_a_hang(url: str) -> None:
    writer = WriterProcess(url)
    try:
        os.kill(writer._proc.pid, signal.SIGKILL)
        writer._proc.wait()
        with pytest.raises(StoreWriteError, match=r"gone|ended"):
            writer.write(_batch("r1"))
    finally:
        writer.close()
