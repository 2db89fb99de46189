"""``modelyard audit query|verify|prove|migrate`` and ``trace --store`` over a SQLite store."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from modelyard.audit.chain import AuditChain
from modelyard.audit.store import HEAD, Batch, open_store, parse_record
from modelyard.cli.main import cli
from modelyard.keys import SigningKey

from tests.support.audit_records import RecordMaker, writer_keyring

KEY = SigningKey.generate("router")


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    maker = RecordMaker(AuditChain("w1", KEY, every_records=4, every_s=3600))
    with open_store(url, create=True) as opened:
        batch = Batch()
        for value in maker.many(0, 5).values:  # 10 records, checkpoints at seq 3 and 7
            batch.add(parse_record(value))
        opened.write(batch)
    return url


@pytest.fixture
def keyring(tmp_path: Path) -> str:
    path = tmp_path / "keyring.yaml"
    writer_keyring(KEY).save(path)
    return str(path)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_query_table_jsonl_and_csv(store: str) -> None:
    code, out = _run("audit", "query", "--store", store, "--request-id", "r1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["KIND", "TIME", "REQUEST_ID"]
    assert len(lines) == 3
    assert "sentiment:2" in out
    assert "w1/0/2" in out
    code, out = _run(
        "audit", "query", "--store", store, "--stage", "sentiment", "--format", "jsonl"
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert len(rows) == 5
    assert {r["kind"] for r in rows} == {"hop"}
    assert rows[0]["principal"] == "alice"
    assert "raw" not in rows[0]
    code, out = _run("audit", "query", "--store", store, "--kind", "request", "--format", "csv")
    assert [r["request_id"] for r in csv.DictReader(io.StringIO(out))] == [
        f"r{i}" for i in range(5)
    ]
    code, out = _run("audit", "query", "--store", store, "--since", "1h", "--principal", "bob")
    assert (code, out.strip()) == (0, "no matching records")


def test_verify_exit_codes(store: str, keyring: str) -> None:
    code, out = _run("audit", "verify", "--store", store, "--keyring", keyring)
    assert code == 0, out
    assert "unsigned tail: writer=w1 partition=0 seq=8..9" in out
    assert out.strip().endswith("verify: ok (10 chained records in 1 chains)")
    with open_store(store) as opened:
        opened.execute("UPDATE hops SET version = '1' WHERE chain_seq = 2")
    code, out = _run("audit", "verify", "--store", store, "--keyring", keyring)
    assert code == 1
    assert "EDITED     writer=w1 partition=0 seq=2 hops.id=" in out


def test_prove(store: str, keyring: str) -> None:
    code, out = _run("audit", "prove", "r1", "--store", store, "--keyring", keyring)
    assert code == 0, out
    assert "checkpoint: VERIFIED" in out
    assert out.strip().endswith("prove: PROVEN r1")
    code, out = _run("audit", "prove", "r4", "--store", store, "--keyring", keyring)
    assert code == 1
    assert "unsigned tail" in out


def test_a_store_never_migrated_is_a_clear_error(tmp_path: Path) -> None:
    url = str(tmp_path / "new.db")
    code, out = _run("audit", "query", "--store", url)
    assert code == 1
    assert "audit migrate" in out
    code, out = _run("audit", "migrate", "--store", url)
    assert code == 0
    assert f"schema version {HEAD}" in out


def test_store_defaults_to_what_up_writes_when_it_exists(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELYARD_AUDIT_STORE", raising=False)
    monkeypatch.chdir(tmp_path)  # where no `modelyard up` ran yet
    code, out = _run("audit", "query")
    assert code == 2
    assert "no audit store: give --store" in out
    assert ".modelyard/up/audit.db" in out
    up = tmp_path / ".modelyard" / "up"
    up.mkdir(parents=True)
    (tmp_path / "audit.db").rename(up / "audit.db")
    code, out = _run("audit", "query", "--request-id", "r1")
    assert code == 0, out
    assert len(out.splitlines()) == 3


def test_trace_reads_the_store(store: str) -> None:
    code, out = _run("trace", "r2", "--store", store, "--bootstrap", "127.0.0.1:1")
    assert code == 0, out
    assert out.startswith("request r2  pipeline docs  caller alice  ok")
    assert "sentiment" in out
