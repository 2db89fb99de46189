"""AuditChain: records sealed into per-partition hash chains, checkpoints signed by the writer."""

from __future__ import annotations

import json
import threading

import pytest
from modelyard.audit.chain import GENESIS, AuditChain, checkpoint_payload, record_hash
from modelyard.errors import UnauthenticatedError
from modelyard.keys import Keyring, SigningKey

RECORD = b'{"schema":1,"kind":"hop","request_id":"r1"}'


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_seal_appends_the_link_and_keeps_the_record_bytes() -> None:
    chain = AuditChain("w1", None)
    sealed = chain.seal(3, RECORD)
    assert sealed.startswith(RECORD[:-1] + b',"chain":')
    body = json.loads(sealed)
    assert body["chain"] == {"writer": "w1", "partition": 3, "seq": 0, "prev": GENESIS}
    assert body["request_id"] == "r1"


def test_each_record_links_to_the_hash_of_the_one_before_per_partition() -> None:
    chain = AuditChain("w1", None)
    a0, b0, a1 = chain.seal(0, RECORD), chain.seal(1, RECORD), chain.seal(0, RECORD)
    assert json.loads(a1)["chain"] == {
        "writer": "w1", "partition": 0, "seq": 1, "prev": record_hash(a0)
    }  # fmt: skip
    assert json.loads(b0)["chain"]["seq"] == 0  # partitions chain separately
    assert chain.partitions() == [0, 1]


def test_a_restarted_chain_begins_anew_under_its_new_writer() -> None:
    chain = AuditChain("w1", SigningKey.generate("router"))
    chain.seal(0, RECORD)
    chain.seal(0, RECORD)  # say these two were aborted with their transaction
    chain.restart("w2")
    assert chain.checkpoint(0) is None  # nothing of the new chain to sign yet
    after = json.loads(chain.seal(0, RECORD))["chain"]
    assert after == {"writer": "w2", "partition": 0, "seq": 0, "prev": GENESIS}
    assert json.loads(chain.checkpoint(0) or b"{}")["writer"] == "w2"


def test_refuses_what_is_not_a_record() -> None:
    with pytest.raises(ValueError, match="schema"):
        AuditChain("w1", None).seal(0, b'{"kind":"hop"}')


def test_checkpoint_due_after_every_records() -> None:
    key = SigningKey.generate("router")
    chain = AuditChain("w1", key, every_records=2, every_s=60, clock=Clock())
    chain.seal(0, RECORD)
    assert not chain.checkpoint_due(0)
    chain.seal(0, RECORD)
    assert chain.checkpoint_due(0)
    assert chain.checkpoint(0) is not None
    assert not chain.checkpoint_due(0)
    assert chain.checkpoint(0) is None  # nothing new to sign


def test_checkpoint_due_after_every_s_when_something_is_unsigned() -> None:
    clock = Clock()
    chain = AuditChain(
        "w1", SigningKey.generate("router"), every_records=100, every_s=5, clock=clock
    )
    chain.seal(0, RECORD)
    clock.now += 4.9
    assert not chain.checkpoint_due(0)
    clock.now += 0.2
    assert chain.checkpoint_due(0)
    assert not chain.checkpoint_due(1)  # a partition with no records


def test_checkpoint_signs_the_head_with_the_writer_key() -> None:
    key = SigningKey.generate("router")
    chain = AuditChain("w1", key, every_records=1)
    chain.seal(2, RECORD)
    last = chain.seal(2, RECORD)
    cp = json.loads(chain.checkpoint(2) or b"")
    assert cp["kind"] == "checkpoint"
    assert cp["schema"] == 1
    assert (cp["writer"], cp["partition"], cp["seq"], cp["head"]) == ("w1", 2, 1, record_hash(last))
    assert cp["key_id"] == key.key_id
    payload = checkpoint_payload("w1", 2, 1, cp["head"], cp["at"])
    ring = Keyring([key.public_entry("writer")])
    ring.verify(cp["key_id"], payload, cp["signature"])
    with pytest.raises(UnauthenticatedError):
        ring.verify(
            cp["key_id"], checkpoint_payload("w1", 2, 0, cp["head"], cp["at"]), cp["signature"]
        )


def test_without_a_key_nothing_is_checkpointed() -> None:
    chain = AuditChain("w1", None, every_records=1)
    chain.seal(0, RECORD)
    assert not chain.checkpoint_due(0)
    assert chain.checkpoint(0) is None


def test_concurrent_seals_make_one_unbroken_chain() -> None:
    chain = AuditChain("w1", None)
    sealed: list[bytes] = []
    lock = threading.Lock()

    def seal_many() -> None:
        for _ in range(200):
            value = chain.seal(0, RECORD)
            with lock:
                sealed.append(value)

    threads = [threading.Thread(target=seal_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    by_seq = {json.loads(v)["chain"]["seq"]: v for v in sealed}
    assert sorted(by_seq) == list(range(800))
    for seq in range(1, 800):
        assert json.loads(by_seq[seq])["chain"]["prev"] == record_hash(by_seq[seq - 1])
