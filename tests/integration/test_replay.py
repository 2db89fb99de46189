"""`modelyard replay`: captured stage inputs from a real audit store (SQLite and PostgreSQL),
re-run through a version in process and over the real broker, compared with what was recorded."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from modelyard.audit.capture import encode_payload
from modelyard.audit.records import encode_hop_record
from modelyard.audit.store import Batch, open_store, parse_record
from modelyard.broker import create_topics
from modelyard.cli.main import cli
from modelyard.repository.build import BuildContext
from modelyard.topics import model_input_topic
from modelyard.wire.envelope import pack_fields

from tests.support.models import write_shout_version
from tests.support.postgres import postgres_db, postgres_url  # noqa: F401  # fixtures
from tests.support.stage import StageProcess

pytestmark = pytest.mark.integration

# what the recorded version answered; it took "boom" in its stride, shout:1 raises on it
RECORDED = {"r1": b"hello", "r2": b"world", "r3": b"boom", "r4": b"again"}


def _hop(
    rid: str, text: bytes, shout: bytes | None, *, stage: str = "first", keep: bool = True,
    redact: frozenset[str] = frozenset(),
) -> bytes:  # fmt: skip
    inputs = {"text": [text]}
    packed_in = pack_fields(inputs)
    captured_in = encode_payload(packed_in, inputs, keep=keep, max_bytes=1 << 20, redact=redact)
    captured_out = None
    if shout is not None:
        outputs = {"shout": np.array([shout], dtype=object)}  # as a stage replies
        captured_out = encode_payload(pack_fields(outputs), outputs, keep=True, max_bytes=1 << 20)
    now = time.time()
    return encode_hop_record(
        request_id=rid, pipeline="docs", caller="alice", trace_id=None, outcome="ok", error=None,
        stage=stage, model="shout", version="0", role="active", shadow=False, attempt=0,
        span_id=None, dispatched_at=now, finished_at=now + 0.01, latency_ms=10.0,
        input_digest="0" * 64, output_digest=None, input=captured_in, output=captured_out,
    )  # fmt: skip


def fill(url: str) -> None:
    records = [_hop(rid, text, text.upper()) for rid, text in RECORDED.items()]
    records += [
        _hop("digest-only", b"secret", b"SECRET", keep=False),
        _hop("redacted", b"private", b"PRIVATE", redact=frozenset({"text"})),
        _hop("no-output", b"quiet", None),
        _hop("other-stage", b"elsewhere", b"ELSEWHERE", stage="second"),
    ]
    batch = Batch()
    for record in records:
        batch.add(parse_record(record))
    with open_store(url, create=True) as store:
        store.write(batch)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_shout_version(BuildContext(root=root, cache=root / ".cache"), "1")
    return root


def replay(*args: str) -> str:
    result = CliRunner().invoke(cli, ["replay", "--stage", "first", "--against", "shout:1", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _expect_known_difference(output: str) -> None:
    assert "8 hops matched" not in output  # the other stage's hop is not one of them
    assert "7 hops matched" in output
    assert "n=4 agree=3 disagree=1 rate=75.0%" in output
    assert "not replayable: 1 inputs captured as digests only" in output
    assert "not replayable: 1 inputs with a redacted field" in output
    assert "not compared: 1 hops recorded no output" in output
    assert "r3: recorded {shout: [b'BOOM']}  replayed error model:" in output


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    url: str = request.getfixturevalue("postgres_db")
    return url


def test_in_process_replay_reports_the_known_difference(store_url: str, repository: Path) -> None:
    fill(store_url)
    output = replay("--store", store_url, "--in-process", "--repository", str(repository))
    assert "(in process)" in output
    _expect_known_difference(output)


def test_limit_and_filters_narrow_what_is_replayed(tmp_path: Path, repository: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    fill(url)
    base = ["--store", url, "--in-process", "--repository", str(repository)]
    assert "n=2 agree=2 disagree=0 rate=100.0%" in replay(*base, "--limit", "2")
    assert "0 hops matched" in replay(*base, "--principal", "mallory")


def test_replay_over_kafka_asks_the_deployed_version(
    broker: str, unique: str, tmp_path: Path, repository: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    fill(url)
    create_topics(broker, [model_input_topic(unique, "shout", "1")])
    stage = StageProcess("shout:1", repository, "--bootstrap", broker, "--topic-prefix", unique,
                         "--no-grpc")  # fmt: skip
    try:
        stage.wait_ready(60)
        output = replay("--store", url, "--bootstrap", broker, "--prefix", unique)
    finally:
        stage.terminate()
    assert "(over Kafka)" in output
    _expect_known_difference(output)


def test_a_version_that_is_not_deployed_is_named(broker: str, unique: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    fill(url)
    argv = ["replay", "--stage", "first", "--against", "shout:9", "--store", url]
    result = CliRunner().invoke(cli, [*argv, "--bootstrap", broker, "--prefix", unique])
    assert result.exit_code == 1
    assert f"shout:9 is not deployed here (no topic {unique}.m.shout.9)" in result.output
