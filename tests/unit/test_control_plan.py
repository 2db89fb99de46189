"""Pure parts of the control CLI and of ``modelyard up``: descriptions, views, checks, plans."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from modelyard.cli.control_view import history_table, last_changes, status_text
from modelyard.control import (
    CanaryChange,
    Change,
    ControlError,
    ControlRecord,
    ControlState,
    GuardRule,
    GuardsChange,
    PipelineRouting,
    ReleaseRollback,
    ReleaseSave,
    Rollback,
    Rollout,
    ShadowChange,
    make_record,
)
from modelyard.control.chain import Positioned
from modelyard.control.deploy import check_change
from modelyard.control.describe import describe_change, percent
from modelyard.errors import ConfigError
from modelyard.graph import ContractError, parse_spec
from modelyard.repository.build import BuildContext
from modelyard.repository.store import ModelRepository
from modelyard.stack.plan import (
    initial_versions,
    parse_versions,
    shadow_only_versions,
    version_roles,
)

from tests.support.models import write_shout_version

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SPEC = parse_spec(
    """\
pipeline: shouty
version: 1
inputs:
  text: {datatype: BYTES, shape: [-1]}
stages:
  first: {model: shout, inputs: {text: request.text}}
  second: {model: shout, inputs: {text: first.shout}}
outputs:
  shout: second.shout
""",
    "shouty.yaml",
)


def _records(*changes: Change) -> list[ControlRecord]:
    records, state = [], PipelineRouting(pipeline="shouty")
    for i, change in enumerate(changes):
        record = make_record(state, change, actor=f"u{i}", at=AT, reason="r" if i else "")
        records.append(record)
        state = record.state
    return records


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    root = tmp_path_factory.mktemp("repo")
    ctx = BuildContext(root=root, cache=root / ".cache")
    write_shout_version(ctx, version="1")
    write_shout_version(ctx, version="2")
    fields = write_shout_version(ctx, version="3").model_dump(mode="json", exclude_none=True)
    fields["inputs"] = [{"name": "text", "datatype": "FP32", "shape": [-1]}]
    ctx.write_version({k: v for k, v in fields.items() if k != "artifacts"}, files={})
    return ModelRepository(root)


@pytest.mark.parametrize(
    ("change", "text"),
    [
        (Rollout(stage="ocr", version="2"), "rollout ocr -> 2"),
        (Rollback(stage="ocr"), "rollback ocr"),
        (CanaryChange(stage="ocr", version="2", weight=0.125), "canary ocr 2 @ 12.5%"),
        (CanaryChange(stage="ocr"), "canary ocr cleared"),
        (ShadowChange(stage="ocr", version="3", sample_rate=1.0), "shadow ocr 3 @ 100%"),
        (ReleaseSave(release="r1"), "release save r1"),
        (ReleaseRollback(release="r1"), "release rollback r1"),
    ],
)
def test_describe_change(change: Change, text: str) -> None:
    assert describe_change(change) == text


def test_percent() -> None:
    assert (percent(0.1), percent(0.125), percent(1.0)) == ("10%", "12.5%", "100%")


def test_last_changes_per_stage_and_status_text() -> None:
    records = _records(
        Rollout(stage="first", version="1"),
        Rollout(stage="second", version="1"),
        Rollout(stage="first", version="2"),
        ReleaseSave(release="good"),
        CanaryChange(stage="second", version="2", weight=0.1),
        GuardsChange(stage="second", rules=(GuardRule(metric="error_rate", max=0.1),)),
    )
    last = last_changes(records)
    assert (last["first"].seq, last["second"].seq) == (3, 6)  # a release save changes no stage
    text = status_text(records[-1].state, records, ("second", "first"))
    lines = text.splitlines()
    assert lines[0] == (
        "pipeline shouty (seq 6) · last change: "
        "guards second: 1 rule(s) by u5 at 2026-01-02 03:04:05Z (r)"
    )
    assert lines[2].split()[:6] == ["second", "1", "-", "2", "@", "10%"]
    assert lines[3].split()[:3] == ["first", "2", "1"]
    assert lines[3].endswith("u2 2026-01-02 03:04:05Z rollout first -> 2")
    assert lines[4] == "guard second: error_rate > 0.1 (over 60 s, >= 50)"
    assert lines[5] == "release good: first=2, second=1"
    assert "no stages routed yet" in status_text(PipelineRouting(pipeline="x"), [])


def test_history_table() -> None:
    records = _records(
        Rollout(stage="first", version="1"),
        Rollout(stage="first", version="2"),
        Rollback(stage="first"),
    )
    lines = history_table([Positioned(i, r) for i, r in enumerate(records)]).splitlines()
    assert lines[0].split() == ["SEQ", "AT", "ACTOR", "CHANGE", "REASON"]
    assert lines[1].startswith("1    2026-01-02 03:04:05Z  u0")
    assert lines[1].endswith("rollout first -> 1  -")
    assert lines[3].endswith("rollback first      r")


def test_check_change_refuses_unknown_stage_version_and_contract(repo: ModelRepository) -> None:
    empty = PipelineRouting(pipeline="shouty")
    check_change(SPEC, repo, empty, Rollout(stage="first", version="1"))
    with pytest.raises(ControlError, match="has no stage 'third'"):
        check_change(SPEC, repo, empty, Rollout(stage="third", version="1"))
    with pytest.raises(ConfigError, match="no version '9' of model 'shout'"):
        check_change(SPEC, repo, empty, Rollout(stage="first", version="9"))
    with pytest.raises(ContractError, match="expects FP32"):
        check_change(SPEC, repo, empty, Rollout(stage="first", version="3"))


def test_check_change_covers_every_canary_combination(repo: ModelRepository) -> None:
    routing = _records(
        Rollout(stage="first", version="1"),
        Rollout(stage="second", version="1"),
    )[-1].state
    check_change(SPEC, repo, routing, CanaryChange(stage="second", version="2", weight=0.5))
    with pytest.raises(ContractError) as caught:
        check_change(SPEC, repo, routing, ShadowChange(stage="second", version="3"))
    assert len(caught.value.problems) == 1


def test_check_change_of_a_release_checks_its_versions(repo: ModelRepository) -> None:
    records = _records(Rollout(stage="first", version="1"), ReleaseSave(release="r"))
    check_change(SPEC, repo, records[-1].state, ReleaseRollback(release="r"))
    check_change(SPEC, repo, records[-1].state, ReleaseRollback(release="unknown"))  # reducer's job


def test_initial_versions_and_the_versions_in_use() -> None:
    routing = _records(Rollout(stage="first", version="1"))[-1].state
    latest = {"shout": "2"}
    assert initial_versions(SPEC, routing, latest, {}) == {"second": "2"}
    assert initial_versions(SPEC, routing, latest, {"shouty.second": "1"}) == {"second": "1"}
    assert initial_versions(SPEC, routing, latest, {"second": "3"}) == {"second": "3"}
    with pytest.raises(ConfigError, match="no version of model 'shout'"):
        initial_versions(SPEC, routing, {"shout": None}, {})
    records = _records(
        Rollout(stage="first", version="1"),
        Rollout(stage="first", version="2"),
        Rollout(stage="first", version="3"),
        CanaryChange(stage="first", version="4", weight=0.1),
        ShadowChange(stage="second", version="5"),
    )
    state = ControlState.from_records(records)
    used = set(version_roles(state, [SPEC]))  # every version a router may send to
    assert used == {("shout", "3"), ("shout", "2"), ("shout", "4"), ("shout", "5")}
    roles = version_roles(state, [SPEC])
    assert roles[("shout", "5")] == {"shadow"}
    assert roles[("shout", "3")] == {"active"}
    assert roles[("shout", "2")] == {"previous"}
    assert shadow_only_versions(roles) == {("shout", "5")}


def test_a_shadow_that_also_serves_is_not_shadow_only() -> None:
    records = _records(
        Rollout(stage="first", version="1"),
        ShadowChange(stage="first", version="2"),
        ShadowChange(stage="second", version="1"),  # 1 also serves "first"
        CanaryChange(stage="first", version="2", weight=0.1),
    )
    roles = version_roles(ControlState.from_records(records), [SPEC])
    assert roles[("shout", "2")] == {"shadow", "canary"}
    assert shadow_only_versions(roles) == set()


def test_parse_versions() -> None:
    assert parse_versions(["ocr=2", "docs.langid=1"]) == {"ocr": "2", "docs.langid": "1"}
    with pytest.raises(ConfigError, match="expected STAGE=VERSION"):
        parse_versions(["ocr"])
