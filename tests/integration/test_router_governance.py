"""`modelyard router` with auth on, over the real broker: Kafka requests must be signed by a
caller key allowed the pipeline; forged control records are ignored; what it writes to the audit
topic is chained per writer and partition and checkpointed with its writer key."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Message, Producer
from modelyard.audit import CheckpointRecord, RequestRecord, decode_audit
from modelyard.audit.chain import GENESIS, checkpoint_payload, record_hash
from modelyard.auth import CallerKey, CallerKeys, TokenEntry, TokenTable, new_caller_key
from modelyard.auth.signing import (
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    canonical_request,
    fields_digest_of,
)
from modelyard.control import Rollout
from modelyard.control.state import encode_record, make_record
from modelyard.control.topic import read_state, write_change
from modelyard.keys import Keyring
from modelyard.repository.build import BuildContext
from modelyard.topics import (
    audit_topic,
    control_topic,
    pipeline_dlq_topic,
    pipeline_ingress_topic,
    pipeline_results_topic,
)
from modelyard.wire import Envelope, decode_envelope, encode_envelope

from tests.support.kafka_io import Collector
from tests.support.keys import admin
from tests.support.models import write_shout_version
from tests.support.stage import ROOT, RouterProcess, StageProcess

pytestmark = pytest.mark.integration

SPEC = """
pipeline: gov
version: 1
inputs: {text: {datatype: BYTES, shape: [-1]}}
stages:
  first: {model: shout, inputs: {text: request.text}}
outputs: {loud: first.shout}
"""
PARTITIONS = 2
ALICE = new_caller_key("alice", ["gov"])
MALLORY = new_caller_key("mallory", ["billing"])  # a real key, for another pipeline
GATEWAY = new_caller_key("router", ["*"], may_act_for=True)


@dataclass
class Running:
    bootstrap: str
    prefix: str
    root: Path
    router: RouterProcess

    def send(self, rid: str, *, key: CallerKey | None, caller: str | None = None) -> bytes:
        """One request naming ``caller`` (default: the key's owner), its signature a true MAC
        with ``key`` (None: unsigned); its value as sent."""
        deadline_ms = int((time.time() + 60) * 1000)
        caller = caller or (key.principal if key else None)
        value = encode_envelope(Envelope(rid, {"text": [rid]}, caller=caller,
                                         deadline_ms=deadline_ms))  # fmt: skip
        headers: list[tuple[str, bytes]] = []
        if key is not None:  # by hand: sign_request refuses to sign for another caller
            digest = fields_digest_of(value)
            payload = canonical_request(rid, "gov", deadline_ms=deadline_ms, caller=caller,
                                        auth=None, fields_digest=digest)  # fmt: skip
            mac = hmac.new(key.secret, payload, hashlib.sha256).hexdigest()
            headers = [(KEY_ID_HEADER, key.key_id.encode()), (SIGNATURE_HEADER, mac.encode())]
        producer = Producer({"bootstrap.servers": self.bootstrap})
        producer.produce(pipeline_ingress_topic(self.prefix, "gov"), value, rid, headers=headers)
        assert producer.flush(10) == 0
        return value

    def read(self, topic: str, done: object, partitions: int = PARTITIONS) -> list[Message]:
        collector = Collector(self.bootstrap, topic, partitions)
        try:
            return collector.until(done, 60)  # type: ignore[arg-type]
        finally:
            collector.close()


@pytest.fixture(scope="module")
def running(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = Path(tmp_path_factory.mktemp("gov"))
    ctx = BuildContext(root=root / "models", cache=root / ".cache")
    write_shout_version(ctx, "1")
    (root / "gov.yaml").write_text(SPEC)
    TokenTable([TokenEntry(principal="alice", pipelines=("gov",))]).save(root / "tokens.yaml")
    CallerKeys([ALICE, MALLORY, GATEWAY]).save(root / "callers.yaml")
    prefix = f"gov-{uuid.uuid4().hex[:8]}"
    write_change(broker, "gov", Rollout(stage="first", version="1"), signer=admin(),
                 prefix=prefix)  # fmt: skip
    common = ("--bootstrap", broker, "--topic-prefix", prefix)
    stage = StageProcess("shout:1", root / "models", *common, "--no-grpc")
    router = RouterProcess(
        str(root / "gov.yaml"), root / "models", *common, "--partitions", str(PARTITIONS),
        "--auth", "tokens", "--tokens-file", str(root / "tokens.yaml"),
        "--callers-file", str(root / "callers.yaml"), "--checkpoint-every-s", "0.5",
    )  # fmt: skip
    try:
        stage.wait_ready(90)
        router.wait_ready(90)
        yield Running(broker, prefix, root, router)
    finally:
        assert router.terminate() == 0, "\n".join(router.lines[-20:])
        stage.terminate()


def _result(running: Running, rid: str) -> Envelope:
    topic = pipeline_results_topic(running.prefix, "gov")
    messages = running.read(topic, lambda ms: any(m.key() == rid.encode() for m in ms))
    return decode_envelope(next(m.value() for m in messages if m.key() == rid.encode()))


def _request_record(running: Running, rid: str) -> RequestRecord:
    def found(ms: list[Message]) -> bool:
        return any(m.key() == rid.encode() and b'"kind":"request"' in m.value() for m in ms)

    messages = running.read(audit_topic(running.prefix), found, partitions=4)
    value = next(m.value() for m in messages
                 if m.key() == rid.encode() and b'"kind":"request"' in m.value())  # fmt: skip
    record = decode_audit(value)
    assert isinstance(record, RequestRecord)
    return record


def test_a_signed_request_is_routed_as_the_key_s_principal(running: Running) -> None:
    running.send("signed-1", key=ALICE)
    result = _result(running, "signed-1")
    assert result.error is None
    assert result.fields["loud"].tolist() == [b"SIGNED-1"]
    record = _request_record(running, "signed-1")
    assert (record.principal, record.auth, record.outcome) == ("alice", "signature", "ok")
    assert record.result is not None  # the result itself is audited, with its digest
    assert record.chain is not None


@pytest.mark.parametrize(
    ("rid", "key", "caller", "code"),
    [
        ("unsigned-root", None, "root", "unauthenticated"),  # whoever it claims to be
        ("other-pipeline", MALLORY, None, "permission_denied"),
        ("claims-alice", MALLORY, "alice", "permission_denied"),  # a key speaks for its owner
    ],
)
def test_an_unproven_request_is_refused_dead_lettered_and_audited_never_routed(
    running: Running, rid: str, key: CallerKey | None, caller: str | None, code: str
) -> None:
    value = running.send(rid, key=key, caller=caller)
    result = _result(running, rid)
    assert result.error is not None
    assert result.error.code == code
    assert result.served_by in ({}, None)  # no stage saw it
    dlq = pipeline_dlq_topic(running.prefix, "gov")
    letters = running.read(dlq, lambda ms: any(m.key() == rid.encode() for m in ms))
    assert next(m.value() for m in letters if m.key() == rid.encode()) == value  # its bytes
    record = _request_record(running, rid)
    assert (record.outcome, record.served_by, record.auth) == (code, {}, "none")


def test_a_forged_control_record_is_ignored_by_the_router(running: Running) -> None:
    head = read_state(running.bootstrap, prefix=running.prefix).pipeline("gov")
    forged = make_record(head, Rollout(stage="first", version="9"), actor="mallory")
    producer = Producer({"bootstrap.servers": running.bootstrap})
    producer.produce(control_topic(running.prefix), encode_record(forged), key=b"gov",
                     partition=0)  # fmt: skip
    assert producer.flush(10) == 0
    history = _cli(running, "history", "gov")
    assert "REJECTED" in history
    assert "unsigned" in history
    running.send("after-forgery", key=ALICE)
    result = _result(running, "after-forgery")  # version 9 does not exist: still served by 1
    assert (result.error, result.served_by) == (None, {"first": "shout:1"})


def test_its_audit_records_are_chained_and_checkpointed_with_its_writer_key(
    running: Running,
) -> None:
    ids = [f"chain-{i}" for i in range(6)]
    for rid in ids:
        running.send(rid, key=ALICE)
    for rid in ids:
        _result(running, rid)

    def checkpointed(ms: list[Message]) -> bool:
        records = [decode_audit(m.value()) for m in ms]
        covered = {(c.writer, c.partition): c.seq for c in records
                   if isinstance(c, CheckpointRecord)}  # fmt: skip
        chained = [r for r in records if not isinstance(r, CheckpointRecord) and r.chain]
        return bool(chained) and all(
            covered.get((r.chain.writer, r.chain.partition), -1) >= r.chain.seq
            for r in chained if r.chain and r.request_id in ids
        )  # fmt: skip

    messages = running.read(audit_topic(running.prefix), checkpointed, partitions=4)
    keyring = Keyring.load(Path(os.environ["MODELYARD_KEYRING"]))  # the session's (conftest)
    heads: dict[tuple[str, int], tuple[int, str]] = {}
    for message in messages:
        record = decode_audit(message.value())
        if isinstance(record, CheckpointRecord):
            seq, head = heads[(record.writer, record.partition)]
            assert (record.seq, record.head) == (seq, head)  # it signs the chain as produced
            at = json.loads(message.value())["at"]  # signed as written
            payload = checkpoint_payload(record.writer, record.partition, record.seq,
                                         record.head, at)  # fmt: skip
            assert keyring.verify(record.key_id, payload, record.signature).role == "writer"
            continue
        link = record.chain
        assert link is not None
        assert link.partition == message.partition()
        seq, prev = heads.get((link.writer, link.partition), (-1, GENESIS))
        assert (link.seq, link.prev) == (seq + 1, prev)  # no gap, no reordering
        heads[(link.writer, link.partition)] = (link.seq, record_hash(message.value()))


def _cli(running: Running, *args: str) -> str:
    argv = [sys.executable, "-m", "modelyard.cli.main", *args, "--bootstrap", running.bootstrap,
            "--topic-prefix", running.prefix]  # fmt: skip
    done = subprocess.run(argv, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout
