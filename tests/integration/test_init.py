"""`modelyard init` on the real broker: what compose's one-shot job and the chart's hook Job run
(topics, then the first version of every stage), idempotent across runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from modelyard.broker import create_topics, partition_counts
from modelyard.cli.init import init_command
from modelyard.control.topic import read_records
from modelyard.control.verify import ControlVerifier
from modelyard.topics import (
    audit_topic,
    control_topic,
    model_dlq_topic,
    model_input_topic,
    pipeline_topics,
)

from tests.support.keys import keys_dir
from tests.support.models import SHOUTY_SPEC, shouty_layout

pytestmark = pytest.mark.integration

SPEC = SHOUTY_SPEC


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(repository with shout:1 and shout:2, pipeline spec)."""
    return shouty_layout(tmp_path_factory.mktemp("init"))


def _init(broker: str, prefix: str, layout: tuple[Path, Path], *extra: str) -> str:
    repo, spec = layout
    args = ["--bootstrap", broker, "--topic-prefix", prefix, "--repository", str(repo)]
    args += ["--pipeline", str(spec), "--partitions", "3", "--wait-s", "30", *extra]
    if "--keys-dir" not in extra:  # the session's keys, never the working directory's
        args += ["--keys-dir", str(keys_dir())]
    result = CliRunner().invoke(init_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_init_creates_every_topic_and_rolls_out_the_first_versions(
    broker: str, unique: str, layout: tuple[Path, Path], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    output = _init(broker, unique, layout, "--version", "first=1", "--keys-dir", str(keys))
    assert "shouty" in output
    assert "first=1 second=2" in output  # --version, else the latest
    model_topics = [
        f(unique, "shout", v) for v in ("1", "2") for f in (model_input_topic, model_dlq_topic)
    ]
    counts = partition_counts(broker, [*pipeline_topics(unique, "shouty"), *model_topics])
    assert set(counts.values()) == {3}
    assert partition_counts(broker, [control_topic(unique)]) == {control_topic(unique): 1}
    assert partition_counts(broker, [audit_topic(unique)]) == {audit_topic(unique): 3}
    # signed by the admin key it created in --keys-dir, which a router's keyring vouches for
    verifier = ControlVerifier.from_file(keys / "keyring.yaml")
    positioned = read_records(broker, prefix=unique, verifier=verifier)
    assert [(p.record.actor, p.record.change.type, p.rejected) for p in positioned] == [
        ("admin", "rollout", None)
    ] * 2
    assert oct((keys / "keys" / "admin.key").stat().st_mode & 0o777) == "0o600"


def test_init_again_changes_nothing(broker: str, unique: str, layout: tuple[Path, Path]) -> None:
    _init(broker, unique, layout, "--version", "first=1", "--version", "second=1")
    output = _init(broker, unique, layout, "--version", "first=2")
    assert "first=1 second=1" in output  # routed stages keep their versions
    assert len(read_records(broker, prefix=unique)) == 2


def test_init_without_topics_routes_topics_made_elsewhere(
    broker: str, unique: str, layout: tuple[Path, Path]
) -> None:
    create_topics(
        broker, [control_topic(unique)], partitions=1, config={"cleanup.policy": "compact"}
    )
    output = _init(broker, unique, layout, "--no-topics")
    assert "first=2 second=2" in output
    ingress = pipeline_topics(unique, "shouty")[0]
    assert partition_counts(broker, [ingress]) == {ingress: 0}
