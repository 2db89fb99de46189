"""Signed control records: what a reader applies and what it rejects (``control/verify.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modelyard.control import (
    Canary,
    CanaryChange,
    Change,
    ControlRecord,
    ControlState,
    GuardRule,
    PipelineRouting,
    Reassert,
    Release,
    ReleaseRollback,
    Rollback,
    Rollout,
    StageRouting,
    Withdraw,
    decode_record,
    encode_record,
    make_record,
)
from modelyard.control.chain import Chain, Positioned
from modelyard.control.deploy import record_check
from modelyard.control.signing import record_payload, sign_record, signed_record
from modelyard.control.verify import ControlVerifier, RejectedRecord, guard_retreat
from modelyard.errors import ConfigError
from modelyard.graph import parse_spec
from modelyard.keys import Keyring, SigningKey, canonical_json
from modelyard.repository.build import BuildContext
from modelyard.repository.store import ModelRepository

from tests.support.models import write_shout_version

ADMIN = SigningKey.generate("root")
ALICE = SigningKey.generate("alice")  # operator of docs
ROUTER = SigningKey.generate("router")  # writer
MALLORY = SigningKey.generate("mallory")  # not in the keyring
KEYRING = Keyring([
    ADMIN.public_entry("admin"),
    ALICE.public_entry("operator", ["docs"]),
    ROUTER.public_entry("writer"),
])  # fmt: skip
VERIFIER = ControlVerifier(KEYRING)
EMPTY = PipelineRouting(pipeline="docs")
GUARD = GuardRule(metric="error_rate", max=0.1)
# ocr: 2 active, 1 before it, 3 on canary, guarded
GUARDED = EMPTY.model_copy(
    update={
        "seq": 4,
        "stages": {
            "ocr": StageRouting(
                active="2", previous=("1",), guards=(GUARD,), canary=Canary(version="3", weight=0.1)
            )
        },
    }
)


def _verify(head: PipelineRouting, record: ControlRecord, base: int | None = None) -> None:
    VERIFIER.verify(head, record, head.seq if base is None else base)


def _reason(head: PipelineRouting, record: ControlRecord, base: int | None = None) -> str:
    with pytest.raises(RejectedRecord) as caught:
        _verify(head, record, base)
    return caught.value.reason


def _signed(head: PipelineRouting, change: Change, key: SigningKey) -> ControlRecord:
    return signed_record(head, change, signer=key, reason="why")


def test_a_signed_record_names_its_key_and_verifies() -> None:
    record = _signed(EMPTY, Rollout(stage="ocr", version="1"), ALICE)
    assert (record.actor, record.key_id) == ("alice", ALICE.key_id)
    _verify(EMPTY, record)


def test_the_signature_covers_the_canonical_record_without_itself() -> None:
    record = _signed(EMPTY, Rollout(stage="ocr", version="1"), ALICE)
    document = json.loads(encode_record(record))
    del document["signature"]
    assert record_payload(record) == canonical_json(document)
    assert b'"key_id"' in record_payload(record)


def test_the_bytes_on_the_topic_do_not_matter_only_the_record() -> None:
    record = _signed(EMPTY, Rollout(stage="ocr", version="1"), ALICE)
    spaced = json.dumps(json.loads(encode_record(record)), indent=2).encode()
    _verify(EMPTY, decode_record(spaced))


def test_an_unsigned_record_is_rejected() -> None:
    record = make_record(EMPTY, Rollout(stage="ocr", version="1"), actor="alice")
    assert _reason(EMPTY, record) == "unsigned"


def test_a_changed_record_fails_its_signature() -> None:
    record = _signed(EMPTY, Rollout(stage="ocr", version="1"), ALICE)
    assert _reason(EMPTY, record.model_copy(update={"reason": "edited"})) == "bad_signature"


def test_a_signature_by_another_key_under_a_trusted_id_is_rejected() -> None:
    record = sign_record(make_record(EMPTY, Rollout(stage="ocr", version="1"), actor="x"), MALLORY)
    forged = record.model_copy(update={"key_id": ADMIN.key_id, "actor": "root"})
    assert _reason(EMPTY, forged) == "bad_signature"


def test_an_unknown_key_is_rejected() -> None:
    record = _signed(EMPTY, Rollout(stage="ocr", version="1"), MALLORY)
    assert _reason(EMPTY, record) == "unknown_key"


def test_the_actor_must_be_the_signing_keys_name() -> None:
    claimed = make_record(EMPTY, Rollout(stage="ocr", version="1"), actor="router:guard")
    claimed = claimed.model_copy(update={"key_id": ALICE.key_id})
    forged = claimed.model_copy(update={"signature": ALICE.sign(record_payload(claimed))})
    assert _reason(EMPTY, forged) == "actor_mismatch"


def test_an_operator_may_change_only_its_pipelines() -> None:
    other = PipelineRouting(pipeline="images")
    record = _signed(other, Rollout(stage="ocr", version="1"), ALICE)
    assert _reason(other, record) == "not_authorised"
    _verify(other, _signed(other, Rollout(stage="ocr", version="1"), ADMIN))


@pytest.mark.parametrize(
    "change",
    [
        Rollout(stage="ocr", version="4"),
        Rollback(stage="ocr"),
        CanaryChange(stage="ocr", version="4", weight=0.5),
    ],
)
def test_a_writer_key_may_not_change_the_routing(change: Change) -> None:
    assert _reason(GUARDED, _signed(GUARDED, change, ROUTER)) == "not_authorised"


@pytest.mark.parametrize(
    "change", [CanaryChange(stage="ocr"), Withdraw(stage="ocr", version="3"), Reassert()]
)
def test_a_writer_key_may_sign_a_guard_retreat_and_a_reassert(change: Change) -> None:
    _verify(GUARDED, _signed(GUARDED, change, ROUTER))


def test_a_guard_retreat_needs_guard_rules_and_the_readers_state() -> None:
    unguarded_stage = GUARDED.stage("ocr").model_copy(update={"guards": ()})
    unguarded = GUARDED.model_copy(update={"stages": {"ocr": unguarded_stage}})
    assert not guard_retreat(unguarded, CanaryChange(stage="ocr"))
    record = _signed(unguarded, CanaryChange(stage="ocr"), ROUTER)
    assert _reason(unguarded, record) == "not_authorised"
    on_unseen = _signed(GUARDED.model_copy(update={"seq": 9}), CanaryChange(stage="ocr"), ROUTER)
    assert _reason(GUARDED, on_unseen, base=9) == "not_authorised"


def test_a_state_that_is_not_the_change_applied_is_rejected() -> None:
    """A guard's signed "clear the canary" cannot carry a routing that rolls out anything."""
    record = make_record(GUARDED, CanaryChange(stage="ocr"), actor="router")
    smuggled = record.state.model_copy(update={"stages": {"ocr": StageRouting(active="6")}})
    lying = sign_record(record.model_copy(update={"state": smuggled}), ROUTER)
    assert _reason(GUARDED, lying) == "inconsistent"


def test_a_change_that_does_not_apply_is_inconsistent() -> None:
    record = make_record(EMPTY, Rollout(stage="ocr", version="1"), actor="x")
    no_rollback = sign_record(record.model_copy(update={"change": Rollback(stage="ocr")}), ADMIN)
    assert _reason(EMPTY, no_rollback) == "inconsistent"


def test_a_state_filed_under_another_pipeline_is_rejected() -> None:
    record = _signed(PipelineRouting(pipeline="images"), Rollout(stage="ocr", version="1"), ADMIN)
    misfiled = sign_record(record.model_copy(update={"key": "docs"}), ADMIN)
    assert _reason(EMPTY, misfiled) == "inconsistent"


def test_without_a_keyring_signatures_are_not_checked_but_consistency_is() -> None:
    insecure = ControlVerifier(None)
    record = make_record(EMPTY, Rollout(stage="ocr", version="1"), actor="anyone")
    insecure.verify(EMPTY, record, 0)
    assert not insecure.secure
    misfiled = record.model_copy(update={"key": "images"})
    with pytest.raises(RejectedRecord, match="filed under"):
        insecure.verify(PipelineRouting(pipeline="images"), misfiled, 0)


def test_a_verifier_needs_a_keyring_with_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no keys in the keyring"):
        ControlVerifier.from_file(tmp_path / "missing.yaml")
    KEYRING.save(tmp_path / "ring.yaml")
    assert ControlVerifier.from_file(tmp_path / "ring.yaml").secure


# --- deploy checks: a router's repository and spec ---------------------------------------

SPEC = parse_spec(
    """\
pipeline: docs
version: 1
inputs:
  text: {datatype: BYTES, shape: [-1]}
stages:
  first: {model: shout, inputs: {text: request.text}}
  second: {model: shout, inputs: {text: first.shout}}
outputs:
  shout: second.shout
""",
    "docs.yaml",
)


@pytest.fixture(scope="module")
def deploying(tmp_path_factory: pytest.TempPathFactory) -> ControlVerifier:
    """A router's verifier: shout 1 and 2 fit the spec, 3 takes FP32 text, 9 does not exist."""
    root = tmp_path_factory.mktemp("repo")
    ctx = BuildContext(root=root, cache=root / ".cache")
    write_shout_version(ctx, version="1")
    write_shout_version(ctx, version="2")
    fields = write_shout_version(ctx, version="3").model_dump(mode="json", exclude_none=True)
    fields["inputs"] = [{"name": "text", "datatype": "FP32", "shape": [-1]}]
    ctx.write_version({k: v for k, v in fields.items() if k != "artifacts"}, files={})
    return ControlVerifier(KEYRING, {"docs": record_check(SPEC, ModelRepository(root))})


def test_a_rollout_to_a_missing_version_is_not_deployable(deploying: ControlVerifier) -> None:
    record = _signed(EMPTY, Rollout(stage="first", version="9"), ADMIN)
    with pytest.raises(RejectedRecord, match="no version '9'") as caught:
        deploying.verify(EMPTY, record, 0)
    assert caught.value.reason == "not_deployable"


def test_a_rollout_that_breaks_the_contract_is_rejected(deploying: ControlVerifier) -> None:
    record = _signed(EMPTY, Rollout(stage="first", version="3"), ADMIN)
    with pytest.raises(RejectedRecord, match="expects FP32") as caught:
        deploying.verify(EMPTY, record, 0)
    assert caught.value.reason == "contract"


def test_a_release_with_one_bad_stage_is_rejected_whole(deploying: ControlVerifier) -> None:
    stages = {"first": StageRouting(active="2"), "second": StageRouting(active="2")}
    release = Release(name="r", stages={"first": "1", "second": "9"})
    head = EMPTY.model_copy(update={"seq": 3, "stages": stages, "releases": {"r": release}})
    record = _signed(head, ReleaseRollback(release="r"), ADMIN)
    chain = Chain(deploying)
    chain.state = ControlState({"docs": head})
    marked = chain.offer(Positioned(7, record, head.seq))
    assert (marked.applied, marked.rejected) == (False, "not_deployable")
    routing = chain.state.pipeline("docs")
    assert (routing.stage("first").active, routing.stage("second").active) == ("2", "2")


# --- the chain: a rejected record changes nothing -----------------------------------------


def test_a_rejected_record_changes_nothing_and_the_next_signed_one_applies() -> None:
    reported: list[Positioned] = []
    chain = Chain(VERIFIER, on_reject=reported.append)
    good = _signed(EMPTY, Rollout(stage="ocr", version="1"), ALICE)
    assert chain.offer(Positioned(0, good, 0)).applied
    head = good.state
    forged = make_record(head, Rollout(stage="ocr", version="6"), actor="mallory")
    marked = chain.offer(Positioned(1, forged, head.seq))
    assert (marked.applied, marked.rejected, marked.detail) == (
        False, "unsigned", "the record is not signed",
    )  # fmt: skip
    assert chain.state.stage("docs", "ocr").active == "1"
    assert reported == [marked]
    after = _signed(head, Rollout(stage="ocr", version="2"), ADMIN)
    assert chain.offer(Positioned(2, after, head.seq)).applied
    assert chain.state.stage("docs", "ocr").active == "2"
