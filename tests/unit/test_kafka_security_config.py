"""Broker-side security without a broker: SCRAM listener settings, the ACL table, and secrets
kept out of every repr, dump and log line of modelyard's Kafka settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner
from modelyard.broker.acls import Acl, PipelinePrincipals, pipeline_acls
from modelyard.broker.kraft_config import KraftNode, server_properties
from modelyard.broker.kraft_security import SaslScram
from modelyard.cli.main import cli
from modelyard.kafka.config import redacted
from modelyard.kafka.process import WorkerSettings
from modelyard.stage.settings import StageSettings

SECRET = "s3cret-value"


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_secured_node_listens_with_scram_and_denies_by_default(tmp_path: Path) -> None:
    node = KraftNode(1, "127.0.0.1", 9001, 9101)
    security = SaslScram(users={"router": "pw"}, admin_password=SECRET)
    props = _props(server_properties(node, [node], tmp_path, security))
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:9001,CONTROLLER://127.0.0.1:9101"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:admin"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert "scram-sha-512=[name=router,password=pw]" in " ".join(security.format_args()).lower()
    assert SECRET not in repr(security)


@pytest.mark.parametrize("bad", ["a,b", 'x"y', "a]", "a b"])
def test_scram_names_that_would_break_quoting_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="SCRAM"):
        SaslScram(users={"ok": bad})


def _table() -> list[Acl]:
    who = PipelinePrincipals(
        "User:router", {("langid", "2"): "User:langid"}, ["User:ops"], "User:sink"
    )
    return pipeline_acls("docs", who)


def _rights(who: str) -> set[tuple[str, str, str]]:
    return {(a.operation, a.resource, a.name) for a in _table() if a.principal == who}


def test_a_stage_reads_only_its_own_input_and_writes_replies_and_its_dlq() -> None:
    assert _rights("User:langid") == {
        ("read", "topic", "yard.m.langid.2"), ("read", "group", "yard.g.langid.2"),
        ("write", "topic", "yard.m.langid.2.replies"), ("write", "topic", "yard.m.langid.2.dlq"),
        ("write", "topic", "yard.p.docs.router"), ("write", "topic", "yard.p.docs.shadow"),
    }  # fmt: skip


def test_operators_and_routers_write_the_control_topic_and_nobody_else() -> None:
    writers = {a.principal for a in _table() if a.name == "yard.control" and a.operation != "read"}
    assert writers == {"User:ops", "User:router"}  # the router: signed guard rollbacks only
    assert ("read", "topic", "yard.control") in _rights("User:router")


def test_the_audit_sink_reads_audit_and_control_and_writes_only_its_dead_letters() -> None:
    assert _rights("User:sink") == {
        ("read", "topic", "yard.audit"), ("read", "topic", "yard.control"),
        ("read", "group", "yard.g.audit-sink"), ("write", "topic", "yard.audit.dlq"),
    }  # fmt: skip


def test_the_router_reads_ingress_and_inbox_and_writes_what_it_produces() -> None:
    rights = _rights("User:router")
    reads = {name for op, kind, name in rights if op == "read" and kind == "topic"}
    assert reads == {"yard.p.docs.in", "yard.p.docs.router", "yard.control"}
    writes = {name for op, kind, name in rights if op == "write"}
    assert writes == {"yard.m.langid.2", "yard.p.docs.out", "yard.p.docs.dlq",
                      "yard.p.docs.shadow", "yard.audit", "yard.gw.", "yard.control"}  # fmt: skip


def test_acls_cli_prints_the_table() -> None:
    args = ["acls", "docs", "--router-principal", "router", "--stage-principal",
            "langid:2=langid", "--operator", "ops", "--sink-principal", "sink"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [str(a) for a in _table()]
    assert "ALLOW User:ops WRITE topic yard.control (literal)" in result.output


# secrets -----------------------------------------------------------------------------------
def _secured_env(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
              "sasl.username": "router", "sasl.password": SECRET,
              "ssl.key.password": SECRET}  # fmt: skip
    monkeypatch.setenv("MODELYARD_KAFKA_CONFIG", json.dumps(config))


def test_secrets_in_kafka_config_reach_the_client_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _secured_env(monkeypatch)
    settings = StageSettings(model="langid:2")
    extra = settings.kafka_extra()
    assert extra["sasl.password"] == extra["ssl.key.password"] == SECRET
    assert extra["sasl.username"] == "router"
    shown = [repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump()),
             repr(settings.loop_options()), repr(redacted(extra))]  # fmt: skip
    for text in shown:
        assert SECRET not in text
    assert "router" in str(settings)  # only the secrets are hidden


def test_the_password_setting_wins_and_stays_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_KAFKA_SASL_PASSWORD", SECRET)
    settings = WorkerSettings(_env_prefix="MODELYARD_")
    assert settings.kafka_extra()["sasl.password"] == SECRET
    assert SECRET not in repr(settings) + settings.model_dump_json()


def test_a_logged_settings_object_shows_no_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _secured_env(monkeypatch)
    settings = StageSettings(model="langid:2")
    logger = structlog.wrap_logger(
        structlog.PrintLogger(), processors=[structlog.processors.JSONRenderer(default=str)]
    )
    logger.info("starting", settings=settings, kafka=redacted(settings.kafka_extra()))
    out = capsys.readouterr().out
    assert "starting" in out
    assert SECRET not in out
