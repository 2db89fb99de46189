"""The control CLI against the real embedded broker, with a small pipeline of test models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result
from modelyard.cli.main import cli
from modelyard.control import Change, ControlRecord, PipelineRouting, Rollout, topic
from modelyard.control.signing import signed_record
from modelyard.control.topic import read_records, read_state
from modelyard.keys import Keyring, SigningKey
from modelyard.repository.build import BuildContext

from tests.support.models import SHOUTY_SPEC, write_shout_version

pytestmark = pytest.mark.integration

SPEC = SHOUTY_SPEC


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(repository, pipelines dir): shout:1 and shout:2 fit the spec, shout:3 takes FP32 text."""
    root = tmp_path_factory.mktemp("control-cli")
    repo = root / "models"
    ctx = BuildContext(root=repo, cache=root / ".cache")
    write_shout_version(ctx, version="1")
    write_shout_version(ctx, version="2")
    broken = write_shout_version(ctx, version="3").model_dump(mode="json", exclude_none=True)
    broken["inputs"] = [{"name": "text", "datatype": "FP32", "shape": [-1]}]
    ctx.write_version({k: v for k, v in broken.items() if k != "artifacts"}, files={})
    (root / "pipelines").mkdir()
    (root / "pipelines" / "shouty.yaml").write_text(SPEC)
    return repo, root / "pipelines"


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    """The CLI configures logging for its process; give the next tests the defaults back."""
    yield
    structlog.reset_defaults()


WRITES = {"rollout", "canary", "shadow", "promote", "rollback", "save", "guard"}


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """A keyring with two admin keys, alice and bob, in ``<dir>/keys/<name>.key``."""
    ring = Keyring()
    (tmp_path / "keys").mkdir()
    for name in ("alice", "bob"):
        key = SigningKey.generate(name)
        key.save(tmp_path / "keys" / f"{name}.key")
        ring.add(key.public_entry("admin"))
    ring.save(tmp_path / "keyring.yaml")
    return tmp_path


def _key(keys: Path, name: str) -> SigningKey:
    return SigningKey.load(keys / "keys" / f"{name}.key")


@pytest.fixture
def run(broker: str, unique: str, layout: tuple[Path, Path], keys: Path):  # type: ignore[no-untyped-def]
    """Invoke the CLI against this test's topics and keyring, writing as alice; ``ok`` says
    which exit status to expect."""
    repo, pipelines = layout

    def invoke(*args: str, ok: bool = True) -> Result:
        options = ["--bootstrap", broker, "--topic-prefix", unique]
        options += ["--keyring", str(keys / "keyring.yaml")]
        if args[0] in {"status", "history"}:
            options += ["--pipelines", str(pipelines), "--repository", str(repo)]
        if WRITES & set(args[:2]):
            options += [
                "--repository",
                str(repo),
                "--pipelines",
                str(pipelines),
                "--key",
                str(keys / "keys" / "alice.key"),
            ]
        # a wrong default must not be what makes a test pass
        result = CliRunner().invoke(cli, [*args, *options], env={"MODELYARD_BOOTSTRAP": "x:1"})
        assert (result.exit_code == 0) == ok, result.output
        return result

    return invoke


def test_rollout_shows_in_status(run, broker: str, unique: str) -> None:  # type: ignore[no-untyped-def]
    out = run("rollout", "shouty", "first", "1", "--reason", "first light").output
    assert "shouty: rollout first -> 1 (seq 1, by alice at " in out
    run("rollout", "shouty", "second", "2")
    status = run("status", "shouty").output
    lines = status.splitlines()
    assert lines[0].startswith(
        "pipeline shouty (seq 2) · last change: rollout second -> 2 by alice"
    )
    assert lines[1].split() == ["STAGE", "ACTIVE", "PREVIOUS", "CANARY", "SHADOW", "LAST", "CHANGE"]
    assert lines[2].split()[:5] == ["first", "1", "-", "-", "-"]
    assert "alice" in lines[2]
    assert lines[2].endswith("rollout first -> 1")
    assert lines[3].split()[:2] == ["second", "2"]
    history = run("history", "shouty").output
    assert "first light" in history
    assert "rollout second -> 2" in history


def test_rollback_of_one_stage_leaves_the_others(run, broker: str, unique: str) -> None:  # type: ignore[no-untyped-def]
    for stage in ("first", "second"):
        run("rollout", "shouty", stage, "1")
        run("rollout", "shouty", stage, "2")
    run("rollback", "shouty", "first", "--reason", "bad output")
    state = read_state(broker, prefix=unique).pipeline("shouty")
    assert (state.stage("first").active, state.stage("first").previous) == ("1", ())
    assert (state.stage("second").active, state.stage("second").previous) == ("2", ("1",))
    last = read_records(broker, prefix=unique)[-1].record
    assert (last.actor, last.reason, last.change.type) == ("alice", "bad output", "rollback")
    run("rollback", "shouty", "first", ok=False)  # nothing left to roll back to


def test_release_rollback_flips_every_stage_in_one_record(run, broker: str, unique: str) -> None:  # type: ignore[no-untyped-def]
    run("rollout", "shouty", "first", "1")
    run("rollout", "shouty", "second", "1")
    run("release", "save", "shouty", "good")
    run("rollout", "shouty", "first", "2")
    run("rollout", "shouty", "second", "2")
    before = len(read_records(broker, prefix=unique))
    out = run("rollback", "shouty", "--release", "good").output
    assert "release rollback good" in out
    records = read_records(broker, prefix=unique)
    assert len(records) == before + 1
    stages = records[-1].record.state.stages
    assert (stages["first"].active, stages["second"].active) == ("1", "1")
    assert "good: first=1, second=1" in run("release", "list", "shouty").output
    assert "release good: first=1, second=1" in run("status", "shouty").output


def test_unknown_version_is_refused(run, broker: str, unique: str) -> None:  # type: ignore[no-untyped-def]
    out = run("rollout", "shouty", "first", "9", ok=False).output
    assert "no version '9' of model 'shout'; versions: ['1', '2', '3']" in out
    out = run("rollout", "shouty", "third", "1", ok=False).output
    assert "pipeline 'shouty' has no stage 'third' (stages: first, second)" in out
    assert read_records(broker, prefix=unique) == []


def test_contract_mismatch_is_refused(run, broker: str, unique: str) -> None:  # type: ignore[no-untyped-def]
    out = run("rollout", "shouty", "first", "3", ok=False).output
    assert "pipeline contract violated" in out
    assert "input 'text' of shout:3 expects FP32 [-1] but request.text is BYTES [-1]" in out
    run("rollout", "shouty", "first", "1")
    out = run("canary", "shouty", "first", "3", "--weight", "10%", ok=False).output
    assert "expects FP32 [-1]" in out
    out = run("shadow", "shouty", "first", "3", ok=False).output
    assert "expects FP32 [-1]" in out
    assert len(read_records(broker, prefix=unique)) == 1


def test_canary_shadow_and_promote(run, broker: str, unique: str) -> None:  # type: ignore[no-untyped-def]
    run("rollout", "shouty", "first", "1")
    run("canary", "shouty", "first", "2", "--weight", "10%")
    run("shadow", "shouty", "second", "2", "--sample-rate", "0.25")
    row = next(x for x in run("status", "shouty").output.splitlines() if x.startswith("first"))
    assert "2 @ 10%" in row
    row = next(x for x in run("status", "shouty").output.splitlines() if x.startswith("second"))
    assert row.split()[:2] == ["second", "-"]
    assert "2 @ 25%" in row
    run("promote", "shouty", "first")
    run("shadow", "shouty", "second", "--clear")
    state = read_state(broker, prefix=unique).pipeline("shouty")
    assert (state.stage("first").active, state.stage("first").canary) == ("2", None)
    assert state.stage("second").shadow is None
    run("canary", "shouty", "first", "--clear", ok=False)  # no canary any more


def test_usage_errors_are_clear(run) -> None:  # type: ignore[no-untyped-def]
    assert (
        "give VERSION and --weight, or --clear"
        in run("canary", "shouty", "first", "2", ok=False).output
    )
    assert "give STAGE, or --release NAME" in run("rollback", "shouty", ok=False).output
    assert (
        "not in (0, 1]"
        in run("canary", "shouty", "first", "2", "--weight", "150%", ok=False).output
    )
    assert "stage 'Bad!'" in run("rollout", "shouty", "Bad!", "1", ok=False).output


def test_the_key_and_keyring_come_from_the_environment(
    broker: str, unique: str, layout: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, pipelines = layout
    argv = [
        "rollout",
        "shouty",
        "first",
        "1",
        "--repository",
        str(repo),
        "--pipelines",
        str(pipelines),
    ]
    key = SigningKey.generate("ci-bot")
    key.save(tmp_path / "ci-bot.key")
    Keyring([key.public_entry("operator", ["shouty"])]).save(tmp_path / "ring.yaml")
    env = {
        "MODELYARD_BOOTSTRAP": broker,
        "MODELYARD_TOPIC_PREFIX": unique,
        "MODELYARD_OPERATOR_KEY": str(tmp_path / "ci-bot.key"),
        "MODELYARD_KEYRING": str(tmp_path / "ring.yaml"),
    }
    result = CliRunner().invoke(cli, argv, env=env)
    assert result.exit_code == 0, result.output
    record = read_records(broker, prefix=unique)[0].record
    assert (record.actor, record.key_id) == ("ci-bot", key.key_id)


def test_actor_can_no_longer_be_claimed(run) -> None:  # type: ignore[no-untyped-def]
    out = run("rollout", "shouty", "first", "1", "--actor", "router:guard", ok=False).output
    assert "No such option" in out  # click words it "'--actor'" or ": --actor" by version
    assert "--actor" in out


def test_a_key_outside_the_keyring_writes_nothing(  # type: ignore[no-untyped-def]
    run, broker: str, unique: str, layout: tuple[Path, Path], keys: Path, tmp_path: Path
) -> None:
    stranger = SigningKey.generate("mallory")
    stranger.save(tmp_path / "mallory.key")
    repo, pipelines = layout
    argv = ["rollout", "shouty", "first", "1", "--bootstrap", broker, "--topic-prefix", unique,
            "--keyring", str(keys / "keyring.yaml"), "--key", str(tmp_path / "mallory.key"),
            "--repository", str(repo), "--pipelines", str(pipelines)]  # fmt: skip
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code != 0
    assert f"key {stranger.key_id!r} is not in the keyring" in result.output
    assert read_records(broker, prefix=unique) == []


def test_an_operator_key_is_refused_for_another_pipeline(
    broker: str, unique: str, layout: tuple[Path, Path], tmp_path: Path
) -> None:
    key = SigningKey.generate("carol")
    key.save(tmp_path / "carol.key")
    Keyring([key.public_entry("operator", ["other"])]).save(tmp_path / "ring.yaml")
    repo, pipelines = layout
    argv = ["rollout", "shouty", "first", "1", "--bootstrap", broker, "--topic-prefix", unique,
            "--keyring", str(tmp_path / "ring.yaml"), "--key", str(tmp_path / "carol.key"),
            "--repository", str(repo), "--pipelines", str(pipelines)]  # fmt: skip
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code != 0
    assert "key 'carol' (operator: pipelines other) may not change pipeline 'shouty'" in (
        result.output
    )
    assert read_records(broker, prefix=unique) == []


def test_a_private_key_readable_by_others_is_refused(  # type: ignore[no-untyped-def]
    run, keys: Path
) -> None:
    (keys / "keys" / "alice.key").chmod(0o644)
    assert "chmod 600" in run("rollout", "shouty", "first", "1", ok=False).output


def test_guard_sets_and_clears_a_stages_rules(run, broker: str, unique: str) -> None:  # type: ignore[no-untyped-def]
    run(
        "guard", "shouty", "first", "--error-rate", "0.1", "--p99-ms", "500",
        "--shadow-disagreement", "0.2", "--min-requests", "20",
    )  # fmt: skip
    rules = read_state(broker, prefix=unique).stage("shouty", "first").guards
    assert [(r.metric, r.max, r.min_requests) for r in rules] == [
        ("error_rate", 0.1, 20), ("p99_latency_ms", 500.0, 20), ("shadow_disagreement", 0.2, 20),
    ]  # fmt: skip
    assert read_records(broker, prefix=unique)[-1].record.actor == "alice"
    run("guard", "shouty", "first", ok=False)  # neither a bound nor --clear
    run("guard", "shouty", "first", "--clear")
    assert read_state(broker, prefix=unique).stage("shouty", "first").guards == ()


def _bob_lands_first(monkeypatch: pytest.MonkeyPatch, broker: str, unique: str, keys: Path) -> None:
    """The next writer loses a race: bob's change lands between its read and its write."""
    real = signed_record

    def racing(current: PipelineRouting, change: Change, **kw: Any) -> ControlRecord:
        monkeypatch.setattr(topic, "signed_record", real)  # once
        bob = Rollout(stage="second", version="1")
        topic.write_change(broker, "shouty", bob, signer=_key(keys, "bob"), prefix=unique)
        return real(current, change, **kw)

    monkeypatch.setattr(topic, "signed_record", racing)


def test_a_change_that_lost_a_race_is_written_again_on_the_new_state(  # type: ignore[no-untyped-def]
    run, broker: str, unique: str, monkeypatch: pytest.MonkeyPatch, keys: Path
) -> None:
    run("rollout", "shouty", "first", "1")
    _bob_lands_first(monkeypatch, broker, unique, keys)
    out = run("rollout", "shouty", "first", "2").output
    assert "another change won: bob's 'rollout second -> 1' (seq 2) landed first; trying" in out
    assert "shouty: rollout first -> 2 (seq 4, by alice" in out  # after alice's reassert
    routing = read_state(broker, prefix=unique).pipeline("shouty")
    assert (routing.stage("first").active, routing.stage("second").active) == ("2", "1")


def test_a_rollback_that_lost_a_race_is_left_to_the_operator(  # type: ignore[no-untyped-def]
    run, broker: str, unique: str, monkeypatch: pytest.MonkeyPatch, keys: Path
) -> None:
    run("rollout", "shouty", "first", "1")
    run("rollout", "shouty", "first", "2")
    _bob_lands_first(monkeypatch, broker, unique, keys)
    out = run("rollback", "shouty", "first", ok=False).output
    assert "another change won: bob's" in out
    assert "check the status and retry" in out
    assert read_state(broker, prefix=unique).stage("shouty", "first").active == "2"
