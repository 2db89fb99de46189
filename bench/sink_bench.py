"""The audit sink: records/s into SQLite and into PostgreSQL against a bare batched insert loop
of the same rows, and how long the sink takes to catch up with a burst of audit records.

- throughput: N realistic records (hop + request per request, captured payloads, sealed into
  chains with signed checkpoints, as ``modelyard.audit.chain`` makes them) are produced to the
  audit topic first; the sink (``AuditSink``, in process, its default batch of 2,000) is started,
  and the clock runs from its partition assignment to the last batch committed (the sink's
  own count of rows committed, read in process, then checked with ``count(*)``): consume,
  parse, write, commit. The baseline is a bare batched insert loop of the same rows: already
  parsed into the values the inserts bind, ``executemany`` of ``INSERT ... ON CONFLICT DO
  NOTHING`` per table in batches of 2,000 records, one transaction each, into a fresh store of
  the same schema (same unique keys and indexes): no Kafka, no parsing. Ratio = sink / bare
  (target >= 0.7); each is the median of three trials run alternately, every trial into a
  fresh store on a synced disk. For PostgreSQL, where the sink writes by ``COPY`` through a
  temporary table, the store's own write path alone (no Kafka, no parsing) is shown too: the
  ceiling.
- lag: with the sink running and caught up, a burst of M records is produced as fast as one
  producer can (a stand-in for the router's audit output at its maximum burst: records are
  produced directly, not by a router), and the time from the burst's first record to the
  store holding all of them (lag back to 0) is reported.

    python -m bench.sink_bench [--quick]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Producer
from modelyard.audit.capture import encode_payload
from modelyard.audit.chain import AuditChain
from modelyard.audit.records import encode_hop_record, encode_request_record
from modelyard.audit.store import AuditStore, Batch, open_store
from modelyard.audit.store.tables import TABLES, Table, Values
from modelyard.audit.store.writes import insert_sql
from modelyard.broker import EmbeddedBroker, create_topics
from modelyard.keys import SigningKey
from modelyard.sink import AuditSink, SinkSettings, tune_interpreter
from modelyard.topics import audit_topic
from modelyard.wire.envelope import pack_fields
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bench.procs import ROOT

Row = tuple[str, float | None, str, bool | None]  # label, value, target, verdict (as bench.run)
PARTITIONS = 4
BATCH = 2000
# bare and sink run alternately, each reported as its median: one slow disk moment (this
# machine's vary by a third from run to run) moves neither figure alone
TRIALS = 3


# records -----------------------------------------------------------------------------------
def make_records(requests: int, partitions: int = PARTITIONS) -> list[tuple[int, bytes]]:
    """(partition, value) of ``requests`` requests' hop and request records, chained, with a
    signed checkpoint every 1,000 records per partition."""
    chain = AuditChain(f"bench-{uuid.uuid4().hex[:6]}", SigningKey.generate("bench"))
    out: list[tuple[int, bytes]] = []
    t = time.time()
    for i in range(requests):
        p = i % partitions
        for value in _request_records(f"req-{i:08d}", t + i / 1000):
            out.append((p, chain.seal(p, value)))
        if chain.checkpoint_due(p):
            out.append((p, chain.checkpoint(p) or b""))
    return out


def _request_records(request_id: str, t: float) -> list[bytes]:
    fields = {"text": f"the quick brown fox jumps over the lazy dog {request_id}"}
    packed, result = pack_fields(fields), pack_fields({"label": "pos", "score": 0.93})
    digest, out_digest = hashlib.sha256(packed).hexdigest(), hashlib.sha256(result).hexdigest()
    payload_in = encode_payload(packed, fields, keep=True, max_bytes=65536)
    payload_out = encode_payload(result, keep=True, max_bytes=65536)
    hop = encode_hop_record(
        request_id=request_id, pipeline="docs", caller="alice", trace_id="ab" * 16,
        outcome="ok", error=None, stage="sentiment", model="sentiment", version="2",
        role="active", shadow=False, attempt=0, span_id="cd" * 8, dispatched_at=t,
        finished_at=t + 0.004, latency_ms=4.2, input_digest=digest, output_digest=out_digest,
        input=payload_in, output=payload_out,
    )  # fmt: skip
    request = encode_request_record(
        request_id=request_id, pipeline="docs", caller="alice", trace_id="ab" * 16,
        outcome="ok", error=None, spec_version=3, received_at=t, finished_at=t + 0.005,
        latency_ms=5.1, served_by={"sentiment": "sentiment:2"}, skipped=[], input_digest=digest,
        principal="alice", auth="token", result=payload_out,
    )  # fmt: skip
    return [hop, request]


# stores ------------------------------------------------------------------------------------
class Stores:
    """Fresh stores, one per measurement: SQLite files under ``work``, PostgreSQL databases on
    the server ``scripts/postgres.sh`` runs (None when it cannot start)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.postgres = _start_postgres()
        self.made: list[str] = []

    def fresh(self, kind: str) -> str:
        """A new, empty store, on a disk left as the last measurement would find it: the
        SQLite files of the one before removed and every write flushed (``sync``), so the
        kernel's write-back of one measurement's file does not land in the next one's clock
        (it did: whichever ran third, the sink, was up to a third slower)."""
        name = f"b_{uuid.uuid4().hex[:10]}"
        for old in self.work.glob("b_*.db*"):
            old.unlink()
        os.sync()
        if kind == "sqlite":
            return f"sqlite:///{self.work / (name + '.db')}"
        assert self.postgres is not None
        with psycopg.connect(self.postgres, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        self.made.append(name)
        return self.postgres.rsplit("/", 1)[0] + f"/{name}"

    def drop_all(self) -> None:
        if self.postgres is None:
            return
        with psycopg.connect(self.postgres, autocommit=True) as admin:
            for name in self.made:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _start_postgres() -> str | None:
    started = subprocess.run(
        ["bash", str(ROOT / "scripts" / "postgres.sh"), "start"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if started.returncode != 0:
        print(f"sink bench: PostgreSQL did not start: {started.stderr.strip()}", flush=True)
        return None
    return started.stdout.strip().splitlines()[-1]


def stored(store: AuditStore) -> int:
    """Rows of requests, hops and checkpoints: one per record."""
    conn = store.dialect.connect()
    try:
        cursor = conn.cursor()
        total = 0
        for table in ("requests", "hops", "checkpoints"):
            cursor.execute(f"SELECT count(*) FROM {table}")  # fixed names
            total += int(cursor.fetchone()[0])
        return total
    finally:
        conn.close()


# measurements ------------------------------------------------------------------------------
def batches_of(records: list[tuple[int, bytes]]) -> list[Batch]:
    """The records' rows, ``BATCH`` records per batch, as the values their inserts bind."""
    batches = []
    for i in range(0, len(records), BATCH):
        batch = Batch()
        for _, value in records[i : i + BATCH]:
            batch.add_record(value)
        batches.append(batch)
    return batches


def bare_insert(url: str, records: list[tuple[int, bytes]]) -> float:
    """Records/s of a bare batched insert loop: per batch of ``BATCH`` records one transaction,
    per table ``executemany`` of ``INSERT ... ON CONFLICT DO NOTHING`` (the store's unique keys
    and indexes); the values are built before the clock starts."""
    batches: list[list[tuple[Table, list[Values]]]] = [
        list(b.tables()) for b in batches_of(records)
    ]
    with open_store(url, create=True) as store:
        dialect = store.dialect
    inserts = {table.name: insert_sql(table, dialect.marker) for table in TABLES}
    conn = dialect.connect()
    try:
        started = time.perf_counter()
        for tables in batches:
            with dialect.transaction(conn):
                cursor = conn.cursor()
                for table, rows in tables:
                    cursor.executemany(inserts[table.name], rows)
        return len(records) / (time.perf_counter() - started)
    finally:
        conn.close()


def store_write(url: str, records: list[tuple[int, bytes]]) -> float:
    """Records/s of the store's own write path (``AuditStore.write``) alone: no Kafka, no
    parsing (values built before the clock starts)."""
    batches = batches_of(records)
    with open_store(url, create=True) as store:
        started = time.perf_counter()
        for batch in batches:
            store.write(batch)
        return len(records) / (time.perf_counter() - started)


def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes]]) -> float:
    """Produce every record; returns the time the first one was handed to the producer."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                         "queue.buffering.max.messages": 1_000_000})  # fmt: skip
    first = time.monotonic()
    for partition, value in records:
        while True:
            try:
                producer.produce(topic, value, b"k", partition=partition)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(60) == 0, "not every audit record was delivered"
    return first


def sink_throughput(bootstrap: str, url: str, records: list[tuple[int, bytes]]) -> float:
    """Records/s from the sink's assignment to the last row stored (records produced first)."""
    prefix = f"sb{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [audit_topic(prefix)], partitions=PARTITIONS)
    produce(bootstrap, audit_topic(prefix), records)
    os.sync()  # the broker's writes of them are set up, not the sink's to pay for
    registry = CollectorRegistry()
    sink = _sink(bootstrap, url, prefix, registry)
    try:
        sink.start()
        assert sink.wait_ready(60), "the sink was not assigned its partitions"
        started = time.monotonic()
        _wait_committed(registry, len(records), sink)
        rate = len(records) / (time.monotonic() - started)
    finally:
        sink.stop()
    with open_store(url) as store:
        assert stored(store) == len(records), "the sink's count and the store's disagree"
    return rate


def sink_lag(bootstrap: str, url: str, records: list[tuple[int, bytes]]) -> dict[str, float]:
    """With the sink caught up: seconds from a burst's first record to all of it stored."""
    prefix = f"sl{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [audit_topic(prefix)], partitions=PARTITIONS)
    registry = CollectorRegistry()
    sink = _sink(bootstrap, url, prefix, registry)
    try:
        sink.start()
        assert sink.wait_ready(60), "the sink was not assigned its partitions"
        first = produce(bootstrap, audit_topic(prefix), records)
        produced_s = time.monotonic() - first
        _wait_committed(registry, len(records), sink)
        caught_up_s = time.monotonic() - first
    finally:
        sink.stop()
    return {"records": len(records), "produce_rate": len(records) / produced_s,
            "caught_up_s": caught_up_s}  # fmt: skip


def _sink(bootstrap: str, url: str, prefix: str, registry: CollectorRegistry) -> AuditSink:
    settings = SinkSettings(
        audit_store=SecretStr(url), bootstrap=bootstrap, topic_prefix=prefix, control=False,
        state_dir=Path(tempfile.mkdtemp(prefix="sink-bench-state-")),
    )  # fmt: skip
    return AuditSink(
        settings, registry=registry, consumer_overrides={"auto.offset.reset": "earliest"}
    )


def committed(registry: CollectorRegistry) -> int:
    """Records in batches the sink has committed to the store (its own count, in process: no
    query competing with the sink for the CPU while it is timed; one pass over the registry
    per look, since the waiting thread takes the GIL from the sink every time it looks)."""
    return sum(
        int(sample.value)
        for metric in registry.collect()
        if metric.name == "modelyard_sink_records"
        for sample in metric.samples
        if sample.name == "modelyard_sink_records_total"
        and sample.labels.get("kind") in ("request", "hop", "checkpoint")
    )


def _wait_committed(
    registry: CollectorRegistry, count: int, sink: AuditSink, timeout_s: float = 300
) -> None:
    deadline = time.monotonic() + timeout_s
    while committed(registry) < count:
        if sink.failure is not None:
            raise RuntimeError(f"the sink failed: {sink.failure!r}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the sink committed {committed(registry)} of {count} records")
        time.sleep(0.005)


# run and report ----------------------------------------------------------------------------
def run(quick: bool) -> dict[str, Any]:
    before, thresholds = sys.getswitchinterval(), gc.get_threshold()
    tune_interpreter()  # as `modelyard audit-sink` does (bare inserts run single-threaded)
    try:
        return _run(quick)
    finally:  # the benches that run after this one in the process
        sys.setswitchinterval(before)
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _run(quick: bool) -> dict[str, Any]:
    # enough records that the sink's fixed costs (first fetch, the last partial batch's wait)
    # do not stand for its throughput: ~2 s of writing
    requests, burst = (5_000, 5_000) if quick else (60_000, 20_000)
    records, burst_records = make_records(requests), make_records(burst)
    results: dict[str, Any] = {"records": len(records)}
    with tempfile.TemporaryDirectory(prefix="modelyard-sink-bench-") as tmp:
        work = Path(tmp)
        stores = Stores(work)
        try:
            with EmbeddedBroker(log_file=work / "broker.log") as broker:
                for kind in ("sqlite", "postgresql"):
                    if kind == "postgresql" and stores.postgres is None:
                        continue
                    print(f"sink: {kind} ...", flush=True)
                    bare, sink = [], []
                    for _ in range(1 if quick else TRIALS):
                        bare.append(bare_insert(stores.fresh(kind), records))
                        sink.append(sink_throughput(broker.bootstrap, stores.fresh(kind), records))
                    results[kind] = {
                        "bare": statistics.median(bare), "bares": bare,
                        "sink": statistics.median(sink), "sinks": sink,
                        "write": store_write(stores.fresh(kind), records),
                        "lag": sink_lag(broker.bootstrap, stores.fresh(kind), burst_records),
                    }  # fmt: skip
        finally:
            stores.drop_all()
    return results


def report(results: dict[str, Any]) -> list[Row]:
    print(f"\nAudit sink, embedded broker, {PARTITIONS} partitions, {results['records']} records")
    print(f"{'store':<12}{'sink rec/s':>12}{'bare rec/s':>12}{'ratio':>8}{'write rec/s':>13}"
          f"{'burst':>8}{'burst rec/s':>13}{'lag to 0 s':>12}")  # fmt: skip
    rows: list[Row] = []
    for kind in ("sqlite", "postgresql"):
        if kind not in results:
            print(f"{kind:<12}{'n/a (no server)':>24}")
            continue
        r = results[kind]
        ratio = r["sink"] / r["bare"]
        lag = r["lag"]
        burst = f"{lag['records']:>8}{lag['produce_rate']:>13.0f}{lag['caught_up_s']:>12.2f}"
        print(f"{kind:<12}{r['sink']:>12.0f}{r['bare']:>12.0f}{ratio:>8.2f}{r['write']:>13.0f}"
              f"{burst}")  # fmt: skip
        trials = zip(r.get("sinks", [r["sink"]]), r.get("bares", [r["bare"]]), strict=True)
        print(f"{'':<12}trials (sink/bare): " + ", ".join(f"{a:.0f}/{b:.0f}" for a, b in trials))
        rows.append((f"audit sink / bare insert, {kind}", ratio, ">= 0.7", ratio >= 0.7))
        rows.append((f"sink lag back to 0 after burst, {kind} (s)", lag["caught_up_s"], "", None))
    print("  burst: records produced as fast as one producer can (a stand-in for the router's")
    print("  audit output at its maximum burst); lag to 0: first record produced -> all stored")
    print("  bare: executemany INSERT ... ON CONFLICT DO NOTHING, 2,000 records a transaction;")
    print(f"  sink and bare: medians of {TRIALS} trials run alternately (--quick: one), each")
    print("  into a fresh store after the last one's files were removed and the disk synced")
    print("  write: the store's own write path alone (PostgreSQL: COPY via a temporary table)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    report(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
