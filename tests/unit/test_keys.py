"""Ed25519 signing keys, keyrings and roles (modelyard.keys)."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from modelyard.cli.main import cli
from modelyard.errors import ConfigError, UnauthenticatedError
from modelyard.keys import (
    KeyEntry,
    Keyring,
    SigningKey,
    canonical_json,
    ensure_local_keys,
    keyring_path,
)


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": ["é", {"d": 2, "c": None}]}) == (
        '{"a":["é",{"c":null,"d":2}],"b":1}'.encode()
    )


def test_a_signature_verifies_with_the_keyring_entry() -> None:
    key = SigningKey.generate("alice")
    keyring = Keyring([key.public_entry("operator", ["docs"])])
    payload = canonical_json({"pipeline": "docs", "version": "2"})

    entry = keyring.verify(key.key_id, payload, key.sign(payload))

    assert entry.name == "alice"
    assert entry.pipelines == ("docs",)
    assert len(base64.b64decode(key.sign(payload))) == 64


def test_a_changed_payload_fails_verification() -> None:
    key = SigningKey.generate("alice")
    keyring = Keyring([key.public_entry("admin")])
    signature = key.sign(b'{"version":"2"}')

    with pytest.raises(UnauthenticatedError, match="bad signature"):
        keyring.verify(key.key_id, b'{"version":"3"}', signature)


def test_another_keys_signature_under_a_trusted_key_id_fails() -> None:
    trusted, mallory = SigningKey.generate("alice"), SigningKey.generate("mallory")
    keyring = Keyring([trusted.public_entry("admin")])

    with pytest.raises(UnauthenticatedError):
        keyring.verify(trusted.key_id, b"x", mallory.sign(b"x"))


@pytest.mark.parametrize("signature", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_a_malformed_signature_is_unauthenticated(signature: str) -> None:
    key = SigningKey.generate("alice")
    with pytest.raises(UnauthenticatedError):
        Keyring([key.public_entry("admin")]).verify(key.key_id, b"x", signature)


def test_an_unknown_key_is_unauthenticated() -> None:
    key = SigningKey.generate("mallory")
    with pytest.raises(UnauthenticatedError, match="unknown key"):
        Keyring().verify(key.key_id, b"x", key.sign(b"x"))


def test_key_id_is_the_sha256_prefix_of_the_raw_public_key() -> None:
    entry = SigningKey.generate("alice").public_entry("admin")
    raw = base64.b64decode(entry.public_key)
    assert len(raw) == 32
    assert entry.key_id == hashlib.sha256(raw).hexdigest()[:16]


def test_roles_bound_what_a_key_may_change() -> None:
    def entry(role: str, pipelines: tuple[str, ...] = ()) -> KeyEntry:
        return KeyEntry(key_id="k", name="n", role=role, pipelines=pipelines, public_key="")  # type: ignore[arg-type]

    assert entry("admin").may_change("anything")
    assert entry("operator", ("docs",)).may_change("docs")
    assert not entry("operator", ("docs",)).may_change("images")
    assert not entry("writer", ("docs",)).may_change("docs")


def test_a_saved_key_has_mode_0600_and_loads_back(tmp_path: Path) -> None:
    key = SigningKey.generate("alice")
    path = tmp_path / "alice.key"
    key.save(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = SigningKey.load(path)
    assert (loaded.name, loaded.key_id) == ("alice", key.key_id)
    assert Keyring([key.public_entry("admin")]).verify(key.key_id, b"p", loaded.sign(b"p"))


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    SigningKey.generate("one").save(path)
    with pytest.raises(ConfigError, match="overwrite"):
        SigningKey.generate("two").save(path)
    assert SigningKey.load(path).name == "one"


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    SigningKey.generate("alice").save(path)
    os.chmod(path, 0o644)

    with pytest.raises(ConfigError, match="chmod 600"):
        SigningKey.load(path)


_AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="owning a file as root or as another "
                              "user needs root (CI runs as root)")  # fmt: skip


@_AS_ROOT
def test_a_root_owned_group_readable_key_loads_as_a_mounted_secret_gives_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "router.key"
    SigningKey.generate("router").save(path)
    os.chmod(path, 0o440)  # Kubernetes: Secret defaultMode 0400 with an fsGroup
    assert SigningKey.load(path).name == "router"
    os.chmod(path, 0o460)  # but never writable by the group
    with pytest.raises(ConfigError, match="chmod 600"):
        SigningKey.load(path)


@_AS_ROOT
def test_a_group_readable_key_of_another_owner_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    SigningKey.generate("alice").save(path)
    os.chown(path, 10001, 10001)
    os.chmod(path, 0o440)
    with pytest.raises(ConfigError, match="chmod 600"):
        SigningKey.load(path)


def test_a_plain_pem_file_takes_its_name_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bob.key"
    SigningKey.generate("ignored").save(path)
    body = path.read_text().split("\n", 1)[1]  # drop the name line: a PEM made by openssl
    path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(body)

    assert SigningKey.load(path).name == "bob"


def test_repr_names_the_key_but_never_the_private_material() -> None:
    key = SigningKey.generate("alice")
    assert "alice" in repr(key)
    assert "PRIVATE" not in repr(key)


@pytest.mark.parametrize("name", ["", "two words", "tab\tname"])
def test_a_key_name_must_be_one_printable_word(name: str) -> None:
    with pytest.raises(ConfigError):
        SigningKey.generate(name)


def test_keyring_round_trips_through_yaml(tmp_path: Path) -> None:
    key = SigningKey.generate("alice")
    path = tmp_path / "keyring.yaml"
    Keyring([key.public_entry("operator", ["docs", "images"])]).save(path)

    loaded = Keyring.load(path)

    assert loaded.get(key.key_id) == key.public_entry("operator", ["docs", "images"])
    assert "PRIVATE" not in path.read_text()


def test_a_missing_keyring_is_empty(tmp_path: Path) -> None:
    assert len(Keyring.load(tmp_path / "nope.yaml")) == 0


def test_an_invalid_keyring_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "keyring.yaml"
    path.write_text("keys:\n  - name: x\n    role: superuser\n")
    with pytest.raises(ConfigError, match="invalid keyring entry"):
        Keyring.load(path)


def test_a_name_names_one_key_only() -> None:
    keyring = Keyring([SigningKey.generate("alice").public_entry("admin")])
    with pytest.raises(ConfigError, match="already has a key named"):
        keyring.add(SigningKey.generate("alice").public_entry("admin"))


def test_ensure_local_keys_creates_then_reuses(tmp_path: Path) -> None:
    first = ensure_local_keys(tmp_path)
    admin_id = SigningKey.load(first.admin_key).key_id

    again = ensure_local_keys(tmp_path)

    keyring = Keyring.load(again.keyring)
    assert again == first
    assert SigningKey.load(again.admin_key).key_id == admin_id
    roles = {entry.name: entry.role for entry in keyring.entries}
    assert roles == {"admin": "admin", "router": "writer", "monitor": "writer"}
    assert stat.S_IMODE(first.router_key.stat().st_mode) == 0o600


def test_ensure_local_keys_restores_a_lost_keyring(tmp_path: Path) -> None:
    local = ensure_local_keys(tmp_path)
    local.keyring.unlink()

    ensure_local_keys(tmp_path)

    assert len(Keyring.load(local.keyring)) == 3


def test_keyring_path_prefers_the_environment(tmp_path: Path) -> None:
    assert keyring_path(tmp_path, {}) == tmp_path / "keyring.yaml"
    assert keyring_path(tmp_path, {"MODELYARD_KEYRING": "/etc/k.yaml"}) == Path("/etc/k.yaml")


def test_keys_create_writes_a_private_key_and_a_public_entry(tmp_path: Path) -> None:
    ring = tmp_path / "ring.yaml"
    argv = ["keys", "create", "alice", "--role", "operator", "--pipelines", "docs, images,docs"]
    result = CliRunner().invoke(cli, [*argv, "--keyring", str(ring)])

    assert result.exit_code == 0, result.output
    key_file = tmp_path / "keys" / "alice.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    entry = Keyring.load(ring).entries[0]
    assert (entry.name, entry.role, entry.pipelines) == ("alice", "operator", ("docs", "images"))
    assert entry.key_id == SigningKey.load(key_file).key_id
    assert "PRIVATE" not in result.output


def test_keys_create_refuses_a_taken_name_and_a_bad_role_scope(tmp_path: Path) -> None:
    ring = ["--keyring", str(tmp_path / "ring.yaml")]
    runner = CliRunner()
    assert runner.invoke(cli, ["keys", "create", "root", "--role", "admin", *ring]).exit_code == 0
    again = runner.invoke(cli, ["keys", "create", "root", "--role", "admin", *ring])
    assert "already has a key named 'root'" in again.output
    unscoped = runner.invoke(cli, ["keys", "create", "bob", "--role", "operator", *ring])
    assert "--pipelines is required for an operator" in unscoped.output
    assert [e.name for e in Keyring.load(tmp_path / "ring.yaml").entries] == ["root"]


def test_keys_list_shows_ids_names_roles_and_pipelines(tmp_path: Path) -> None:
    ring = tmp_path / "ring.yaml"
    alice, router = SigningKey.generate("alice"), SigningKey.generate("router")
    Keyring([alice.public_entry("operator", ["docs"]), router.public_entry("writer")]).save(ring)

    lines = CliRunner().invoke(cli, ["keys", "list", "--keyring", str(ring)]).output.splitlines()

    assert lines[0].split() == ["KEY", "ID", "NAME", "ROLE", "PIPELINES"]
    assert lines[1].split() == [alice.key_id, "alice", "operator", "docs"]
    assert lines[2].split() == [router.key_id, "router", "writer", "-"]
