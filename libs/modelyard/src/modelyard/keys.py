"""Ed25519 keys that sign what must not be forged: control changes and audit checkpoints.

A ``SigningKey`` is one private key with a name, kept in a 0600 file. A ``Keyring`` is the list
of public keys a verifier trusts, each with a role:

- ``admin``: may change every pipeline;
- ``operator``: may change only the pipelines its entry names;
- ``writer``: a router or audit writer; signs audit checkpoints (and a router's own guard
  rollbacks, see docs/control-plane.md), never an operator's change.

Every signature covers ``canonical_json`` of a document, so a signer and a verifier written in
any language agree on the bytes. ``ensure_local_keys`` gives ``modelyard up`` a working keyring
(an ``admin`` key and a ``router`` writer key) on first use, so the embedded default needs no
setup.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel, ConfigDict, ValidationError

from modelyard.errors import ConfigError, UnauthenticatedError

__all__ = [
    "KEYRING_ENV",
    "KeyEntry",
    "Keyring",
    "LocalKeys",
    "Role",
    "SigningKey",
    "canonical_json",
    "ensure_local_keys",
    "key_id_of",
    "keyring_path",
]

KEYRING_ENV = "MODELYARD_KEYRING"
Role = Literal["admin", "operator", "writer"]
_NAME_HEADER = "modelyard-key-name: "  # one line before the PEM block: the key's own name
_GROUP_OR_OTHER = 0o077
# a root-owned key may be group-readable, as PostgreSQL allows for its TLS key: a Kubernetes
# Secret mounted with an fsGroup is exactly that (root, 0440), and only that group can read it
_ROOT_OWNED_EXTRA = 0o037


def canonical_json(obj: Any) -> bytes:
    """The exact bytes every signature covers: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id_of(raw_public_key: bytes) -> str:
    """A short stable id for a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


class KeyEntry(BaseModel):
    """One trusted public key in a keyring, with the role that bounds what it may sign."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str
    name: str
    role: Role
    pipelines: tuple[str, ...] = ()
    public_key: str  # base64 of the raw 32-byte Ed25519 public key

    def may_change(self, pipeline: str) -> bool:
        """Whether this key may sign an operator's change to ``pipeline``."""
        if self.role == "admin":
            return True
        return self.role == "operator" and pipeline in self.pipelines

    def verify(self, payload: bytes, signature: str) -> None:
        """Raise ``UnauthenticatedError`` unless ``signature`` is this key's over ``payload``."""
        try:
            raw_signature = base64.b64decode(signature, validate=True)
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(self.public_key))
            public.verify(raw_signature, payload)
        except (binascii.Error, ValueError, InvalidSignature) as exc:
            raise UnauthenticatedError(f"bad signature for key {self.key_id}") from exc


class SigningKey:
    """A named Ed25519 private key. Never logged, never printed; saved only with mode 0600."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = name
        self._private = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._raw_public = raw
        self.key_id = key_id_of(raw)

    def __repr__(self) -> str:  # keep private material out of reprs and tracebacks
        return f"SigningKey(name={self.name!r}, key_id={self.key_id!r})"

    @classmethod
    def generate(cls, name: str) -> SigningKey:
        _check_name(name)
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Read a key file, refusing one that group or others could read (group read is
        allowed on a file root owns: a mounted Kubernetes Secret)."""
        path = Path(path)
        try:
            info = path.stat()
        except FileNotFoundError:
            raise ConfigError(f"no key file at {path}") from None
        mode = info.st_mode
        if stat.S_IMODE(mode) & (_ROOT_OWNED_EXTRA if info.st_uid == 0 else _GROUP_OR_OTHER):
            raise ConfigError(
                f"key file {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                f"run: chmod 600 {path}"
            )
        return cls._parse(path.read_text(encoding="utf-8"), default_name=path.stem, path=path)

    @classmethod
    def _parse(cls, text: str, *, default_name: str, path: Path) -> SigningKey:
        name, pem = default_name, text
        first, _, rest = text.partition("\n")
        if first.startswith(_NAME_HEADER):
            name, pem = first.removeprefix(_NAME_HEADER).strip(), rest
        try:
            private = serialization.load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path} is not an unencrypted PEM private key") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError(f"{path} holds a key that is not Ed25519")
        return cls(name, private)

    def save(self, path: Path) -> None:
        """Write the key as PEM PKCS8 with mode 0600; never overwrite an existing file."""
        path = Path(path)
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        data = f"{_NAME_HEADER}{self.name}\n".encode() + pem
        try:  # O_EXCL + 0600 at creation: the key is never briefly readable by others
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConfigError(f"refusing to overwrite the key file {path}") from None
        with os.fdopen(fd, "wb") as out:
            out.write(data)

    def sign(self, payload: bytes) -> str:
        """Base64 of the 64-byte Ed25519 signature over ``payload``."""
        return base64.b64encode(self._private.sign(payload)).decode("ascii")

    def public_entry(self, role: Role, pipelines: Iterable[str] = ()) -> KeyEntry:
        """The keyring entry that lets verifiers trust this key in ``role``."""
        return KeyEntry(
            key_id=self.key_id,
            name=self.name,
            role=role,
            pipelines=tuple(pipelines),
            public_key=base64.b64encode(self._raw_public).decode("ascii"),
        )


class Keyring:
    """The public keys a verifier trusts, by key id. Stored as YAML ``keys: [...]``."""

    def __init__(self, entries: Iterable[KeyEntry] = ()) -> None:
        self._by_id: dict[str, KeyEntry] = {}
        for entry in entries:
            self.add(entry)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """Read a keyring; a missing file is an empty keyring (which trusts nothing)."""
        path = Path(path)
        if not path.exists():
            return cls()
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(document, Mapping) or not isinstance(document.get("keys", []), list):
            raise ConfigError(f"{path}: a keyring is a mapping with a list under 'keys'")
        try:
            return cls(KeyEntry.model_validate(item) for item in document.get("keys", []))
        except ValidationError as exc:
            raise ConfigError(f"{path}: invalid keyring entry: {exc}") from exc

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = [entry.model_dump(mode="json") for entry in self.entries]
        for item in keys:  # YAML lists read better than the tuples pydantic dumps
            item["pipelines"] = list(item["pipelines"])
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(yaml.safe_dump({"keys": keys}, sort_keys=False), encoding="utf-8")
        temporary.replace(path)  # atomic: a reader never sees half a keyring

    def add(self, entry: KeyEntry) -> None:
        """Add or replace the entry for ``entry.key_id``; a name names one key only."""
        for existing in self._by_id.values():
            if existing.name == entry.name and existing.key_id != entry.key_id:
                raise ConfigError(f"the keyring already has a key named {entry.name!r}")
        self._by_id[entry.key_id] = entry

    @property
    def entries(self) -> tuple[KeyEntry, ...]:
        return tuple(self._by_id.values())

    def get(self, key_id: str) -> KeyEntry | None:
        return self._by_id.get(key_id)

    def verify(self, key_id: str, payload: bytes, signature: str) -> KeyEntry:
        """The entry whose key made ``signature`` over ``payload``, or UnauthenticatedError."""
        entry = self._by_id.get(key_id)
        if entry is None:
            raise UnauthenticatedError(f"unknown key {key_id!r}")
        entry.verify(payload, signature)
        return entry

    def __len__(self) -> int:
        return len(self._by_id)


@dataclass(frozen=True, slots=True)
class LocalKeys:
    """Where ``ensure_local_keys`` put the embedded stack's keyring and keys."""

    keyring: Path
    admin_key: Path
    router_key: Path
    monitor_key: Path  # the monitor's own writer key: its guards' withdrawals name it


def keyring_path(state_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
    """``MODELYARD_KEYRING`` when set, else ``<state-dir>/keyring.yaml``."""
    configured = (os.environ if environ is None else environ).get(KEYRING_ENV)
    return Path(configured) if configured else Path(state_dir) / "keyring.yaml"


def ensure_local_keys(state_dir: Path) -> LocalKeys:
    """Create (first use) or reuse the ``admin``, ``router`` and ``monitor`` keys and their
    keyring."""
    state_dir = Path(state_dir)
    keys_dir = state_dir / "keys"
    if not keys_dir.is_dir():  # an existing one may be read-only (a mounted Secret): kept as is
        keys_dir.mkdir(parents=True)
        keys_dir.chmod(0o700)
    local = LocalKeys(
        keyring=state_dir / "keyring.yaml",
        admin_key=keys_dir / "admin.key",
        router_key=keys_dir / "router.key",
        monitor_key=keys_dir / "monitor.key",
    )
    keyring = Keyring.load(local.keyring)
    before = keyring.entries
    wanted: tuple[tuple[Path, Role], ...] = (
        (local.admin_key, "admin"),
        (local.router_key, "writer"),
        (local.monitor_key, "writer"),
    )
    for path, role in wanted:
        key = _load_or_create(path)
        if keyring.get(key.key_id) is None:
            keyring.add(key.public_entry(role))
    if keyring.entries != before:
        keyring.save(local.keyring)
    return local


def _load_or_create(path: Path) -> SigningKey:
    if path.exists():
        return SigningKey.load(path)
    key = SigningKey.generate(path.stem)
    key.save(path)
    return key


def _check_name(name: str) -> None:
    if not name or not name.isprintable() or any(char.isspace() for char in name):
        raise ConfigError(f"invalid key name {name!r}: use printable characters, no spaces")
