"""Forged control records against the real broker: a following router ignores and reports them,
``modelyard history``/``status`` show them as rejected, and a signed change still applies.

The forger uses a plain confluent_kafka Producer, as anyone who can write the control topic can.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner
from confluent_kafka import Producer
from modelyard.cli.main import cli
from modelyard.control import (
    CanaryChange,
    ControlRecord,
    GuardRule,
    GuardsChange,
    PipelineRouting,
    Rollout,
    encode_record,
    make_record,
)
from modelyard.control.chain import BASE_HEADER
from modelyard.control.deploy import record_check
from modelyard.control.follower import ControlFollower
from modelyard.control.signing import sign_record, signed_record
from modelyard.control.topic import read_state, write_change
from modelyard.control.verify import ControlVerifier, RejectedRecord
from modelyard.graph import load_spec
from modelyard.keys import Keyring, SigningKey
from modelyard.repository.build import BuildContext
from modelyard.repository.store import ModelRepository
from prometheus_client import CollectorRegistry

from tests.support.models import SHOUTY_SPEC, write_shout_version

pytestmark = pytest.mark.integration

SPEC = SHOUTY_SPEC
ROOT = SigningKey.generate("root")  # admin
CAROL = SigningKey.generate("carol")  # operator of "images" only
ROUTER = SigningKey.generate("router")  # writer
MALLORY = SigningKey.generate("mallory")  # in no keyring


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<root>/models (shout 1 and 2), <root>/pipelines/shouty.yaml, <root>/keyring.yaml."""
    root = tmp_path_factory.mktemp("signed-control")
    ctx = BuildContext(root=root / "models", cache=root / ".cache")
    write_shout_version(ctx, version="1")
    write_shout_version(ctx, version="2")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "shouty.yaml").write_text(SPEC)
    Keyring([
        ROOT.public_entry("admin"),
        CAROL.public_entry("operator", ["images"]),
        ROUTER.public_entry("writer"),
    ]).save(root / "keyring.yaml")  # fmt: skip
    return root


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def _router_verifier(layout: Path) -> ControlVerifier:
    """What a router of shouty checks records with: keyring, spec, repository."""
    spec = load_spec(layout / "pipelines" / "shouty.yaml")
    check = record_check(spec, ModelRepository(layout / "models"))
    return ControlVerifier.from_file(layout / "keyring.yaml", {"shouty": check})


def _forge(broker: str, prefix: str, records: list[ControlRecord]) -> None:
    """Produce ``records`` as any Kafka client can: no modelyard code on the way."""
    producer = Producer({"bootstrap.servers": broker})
    for record in records:
        base = str(record.seq - 1).encode()
        producer.produce(f"{prefix}.control", encode_record(record), key=record.key.encode(),
                         headers=[(BASE_HEADER, base)], partition=0)  # fmt: skip
    assert producer.flush(10) == 0


def _forgeries(head: PipelineRouting) -> dict[str, ControlRecord]:
    """One forged record per attack, each built on the pipeline's current state."""
    bump = Rollout(stage="first", version="2")
    impostor = sign_record(make_record(head, bump, actor="x"), MALLORY)
    return {
        "unsigned": make_record(head, bump, actor="router:guard"),
        "bad_signature": impostor.model_copy(update={"key_id": ROOT.key_id, "actor": "root"}),
        "unknown_key": impostor,
        "not_authorised": signed_record(head, bump, signer=CAROL),  # operator of images only
        "writer_rollout": signed_record(head, bump, signer=ROUTER),
        "not_deployable": signed_record(head, Rollout(stage="first", version="9"), signer=ROOT),
    }


def test_forged_records_are_ignored_and_reported_while_a_signed_one_applies(
    broker: str, unique: str, layout: Path
) -> None:
    verifier = _router_verifier(layout)
    for stage in ("first", "second"):
        write_change(broker, "shouty", Rollout(stage=stage, version="1"), signer=ROOT,
                     verifier=verifier, prefix=unique)  # fmt: skip
    registry = CollectorRegistry()
    applied: list[ControlRecord] = []
    follower = ControlFollower(broker, prefix=unique, verifier=verifier, registry=registry,
                               on_change=applied.append)  # fmt: skip
    with follower:
        assert follower.wait_caught_up(30)
        head = follower.state.pipeline("shouty")
        forged = _forgeries(head)
        _forge(broker, unique, list(forged.values()))
        signed = write_change(broker, "shouty", Rollout(stage="first", version="2"),
                              signer=ROOT, verifier=verifier, prefix=unique)  # fmt: skip
        assert follower.wait_until(lambda s: s.pipeline("shouty").seq == signed.seq, 30)
        routing = follower.state.pipeline("shouty")
        rejected = [(p.rejected, p.record.actor) for p in follower.rejected]

    assert (routing.stage("first").active, routing.stage("first").previous) == ("2", ("1",))
    assert [(r.actor, r.seq) for r in applied] == [("root", 1), ("root", 2), ("root", 3)]
    assert rejected == [
        ("unsigned", "router:guard"),
        ("bad_signature", "root"),
        ("unknown_key", "mallory"),
        ("not_authorised", "carol"),
        ("not_authorised", "router"),
        ("not_deployable", "root"),
    ]
    count = registry.get_sample_value
    labels = {"pipeline": "shouty", "reason": "not_authorised"}
    assert count("modelyard_control_rejected_total", labels) == 2
    assert count("modelyard_control_rejected_total", {**labels, "reason": "unsigned"}) == 1


def test_history_and_status_show_what_routers_rejected(
    broker: str, unique: str, layout: Path
) -> None:
    verifier = _router_verifier(layout)
    write_change(broker, "shouty", Rollout(stage="first", version="1"), signer=ROOT,
                 verifier=verifier, prefix=unique)  # fmt: skip
    head = read_state(broker, prefix=unique, verifier=verifier).pipeline("shouty")
    forged = _forgeries(head)
    _forge(broker, unique, [forged["unsigned"], forged["not_deployable"]])

    history = _cli("history", "shouty", broker=broker, prefix=unique, layout=layout)
    lines = history.splitlines()
    assert lines[1].split()[0] == "1"
    assert lines[1].split()[3] == "root"  # seq, date, time, actor
    assert "router:guard?" in lines[2]
    assert "REJECTED rollout first -> 2" in lines[2]
    assert lines[2].endswith("unsigned: the record is not signed")
    assert "REJECTED rollout first -> 9" in lines[3]
    assert "not_deployable: no version '9' of model 'shout'" in lines[3]

    status = _cli("status", "shouty", broker=broker, prefix=unique, layout=layout)
    assert status.splitlines()[2].split()[:2] == ["first", "1"]
    assert "rejected: 2 record(s) ignored by routers; last at offset 2: rollout first -> 9 " \
           "claimed by root (not_deployable: no version '9'" in status  # fmt: skip


def test_the_cli_refuses_a_change_routers_would_reject(
    broker: str, unique: str, layout: Path, tmp_path: Path
) -> None:
    """An operator key of another pipeline, and a change to a missing version: nothing written."""
    carol_path = tmp_path / "carol.key"
    CAROL.save(carol_path)
    out = _cli("rollout", "shouty", "first", "1", "--key", str(carol_path),
               broker=broker, prefix=unique, layout=layout, ok=False)  # fmt: skip
    assert "key 'carol' (operator: pipelines images) may not change pipeline 'shouty'" in out
    root_path = tmp_path / "root.key"
    ROOT.save(root_path)
    out = _cli("rollout", "shouty", "first", "9", "--key", str(root_path),
               broker=broker, prefix=unique, layout=layout, ok=False)  # fmt: skip
    assert "no version '9' of model 'shout'" in out
    assert read_state(broker, prefix=unique).pipelines == {}


def test_a_router_guard_retreat_applies_where_guards_are_set(
    broker: str, unique: str, layout: Path
) -> None:
    """The writer key clears a guarded canary (what the router's guard writes); nothing else."""
    verifier = _router_verifier(layout)
    write: dict[str, Any] = {"prefix": unique, "verifier": verifier}
    write_change(broker, "shouty", Rollout(stage="first", version="1"), signer=ROOT, **write)
    canary = CanaryChange(stage="first", version="2", weight=0.5)
    write_change(broker, "shouty", canary, signer=ROOT, **write)
    clear = CanaryChange(stage="first", version=None)
    with pytest.raises(RejectedRecord, match="guard retreats only"):
        write_change(broker, "shouty", clear, signer=ROUTER, **write)  # no guard rules yet
    rules = (GuardRule(metric="error_rate", max=0.1),)
    write_change(broker, "shouty", GuardsChange(stage="first", rules=rules), signer=ROOT, **write)
    record = write_change(broker, "shouty", clear, signer=ROUTER, **write)
    assert record.actor == "router"
    assert (
        read_state(broker, prefix=unique, verifier=verifier).stage("shouty", "first").canary is None
    )


def _cli(*args: str, broker: str, prefix: str, layout: Path, ok: bool = True) -> str:
    options = ["--bootstrap", broker, "--topic-prefix", prefix,
               "--keyring", str(layout / "keyring.yaml"), "--pipelines", str(layout / "pipelines"),
               "--repository", str(layout / "models")]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, *options], env={"MODELYARD_BOOTSTRAP": "x:1"})
    assert (result.exit_code == 0) == ok, result.output
    return result.output
