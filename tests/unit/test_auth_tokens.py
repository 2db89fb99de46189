"""The tokens and callers files: hashed tokens, constant-time lookup, grants, private keys."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from modelyard.auth import CallerKeys, Grant, TokenEntry, TokenTable, hash_token, new_caller_key
from modelyard.auth import tokens as tokens_module
from modelyard.cli.main import cli
from modelyard.errors import ConfigError


def test_tokens_add_prints_the_token_once_and_stores_only_its_digest(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    result = CliRunner().invoke(
        cli, ["tokens", "add", "svc-billing", "--pipelines", "docs, echo", "--file", str(path)]
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert len(token) >= 40
    text = path.read_text()
    assert token not in text
    assert hashlib.sha256(token.encode()).hexdigest() in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = TokenTable.load(path).lookup(token)
    assert entry is not None
    assert (entry.principal, entry.pipelines) == ("svc-billing", ("docs", "echo"))
    listed = CliRunner().invoke(cli, ["tokens", "list", "--file", str(path)])
    assert "svc-billing" in listed.stdout
    assert token not in listed.stdout


def test_a_second_token_is_added_beside_the_first(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    runner = CliRunner()
    args = ["--pipelines", "docs", "--file", str(path)]
    first = runner.invoke(cli, ["tokens", "add", "alice", *args]).stdout.strip()
    second = runner.invoke(cli, ["tokens", "add", "alice", *args]).stdout.strip()
    table = TokenTable.load(path)
    assert first != second
    assert {table.lookup(first).principal, table.lookup(second).principal} == {"alice"}  # type: ignore[union-attr]


def test_an_entry_must_allow_something() -> None:
    result = CliRunner().invoke(cli, ["tokens", "add", "x", "--file", "unused.yaml"])
    assert result.exit_code == 2
    assert "--pipelines or --models" in result.output


def test_lookup_compares_with_every_entry_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    table = TokenTable(
        TokenEntry(principal=f"p{i}", token_sha256=hash_token(f"t{i}"), pipelines=("*",))
        for i in range(5)
    )
    compared: list[tuple[bytes, bytes]] = []

    def compare(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(tokens_module, "hmac", SimpleNamespace(compare_digest=compare))
    assert table.lookup("t0").principal == "p0"  # type: ignore[union-attr]
    assert len(compared) == 5  # no early exit on the first match
    assert all(len(a) == len(b) == 32 for a, b in compared)  # digests, never the token
    compared.clear()
    assert table.lookup("nope") is None
    assert len(compared) == 5


def test_grants_are_the_union_of_a_principals_entries() -> None:
    table = TokenTable([
        TokenEntry(principal="alice", token_sha256=hash_token("a"), pipelines=("docs",)),
        TokenEntry(principal="alice", models=("sentiment:2", "langid")),
        TokenEntry(principal="bob", pipelines=("*",)),
    ])  # fmt: skip
    alice = table.grant_of("alice")
    assert alice.allows_pipeline("docs")
    assert not alice.allows_pipeline("other")
    assert alice.allows_model("sentiment", "2")
    assert not alice.allows_model("sentiment", "1")
    assert alice.allows_model("langid", "7")
    assert table.grant_of("bob").allows_pipeline("anything")
    assert table.grant_of("carol") == Grant()


def test_a_bad_tokens_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  - principal: x\n    token_sha256: not-hex\n")
    with pytest.raises(ConfigError, match="invalid entry"):
        TokenTable.load(path)


def test_callers_file_is_private_and_keys_stay_out_of_reprs(tmp_path: Path) -> None:
    path = tmp_path / "callers.yaml"
    key = new_caller_key("svc", ["docs"])
    CallerKeys([key]).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key.key.get_secret_value() not in repr(key)
    assert CallerKeys.load(path).get(key.key_id) == key
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        CallerKeys.load(path)


def test_callers_add_writes_both_files_and_prints_only_the_key_id(tmp_path: Path) -> None:
    path, mine = tmp_path / "callers.yaml", tmp_path / "svc.key"
    result = CliRunner().invoke(cli, [
        "callers", "add", "svc", "--pipelines", "docs", "--file", str(path),
        "--key-out", str(mine),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    (key,) = CallerKeys.load(path).keys
    assert result.stdout.strip() == key.key_id
    assert key.key.get_secret_value() not in result.output
    assert CallerKeys.load(mine).only(mine) == key
    assert stat.S_IMODE(mine.stat().st_mode) == 0o600
    again = CliRunner().invoke(cli, [
        "callers", "add", "svc", "--pipelines", "docs", "--file", str(path),
        "--key-out", str(mine),
    ])  # fmt: skip
    assert again.exit_code != 0  # never overwrites a key file
