"""Caller keys: the HMAC-SHA256 secrets Kafka requests are signed with.

A callers file (YAML, mode 0600: it holds secrets) lists every key a router accepts::

    callers:
      - principal: svc-billing
        key_id: 9b2f0c1d5e6a7b8c
        key: <base64 of 32 random bytes>
        pipelines: [docs]                # "*" for every pipeline
        may_act_for: false

A key with ``may_act_for: true`` belongs to a gateway that authenticated its caller itself (the
router's own gRPC gateway): it may sign requests naming another caller. A caller's own key
file is a callers file with its one entry (``modelyard callers add --key-out``).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic import ValidationError as PydanticValidationError

from modelyard.auth._files import read_yaml, write_private_yaml
from modelyard.auth.grants import Grant
from modelyard.errors import ConfigError

__all__ = ["CallerKey", "CallerKeys", "new_caller_key"]

_KEY_BYTES = 32  # the HMAC-SHA256 block is 64 bytes; 32 random bytes are its full strength


class CallerKey(BaseModel):
    """One caller's signing key. ``key`` is a SecretStr: reprs and logs show ``**********``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    principal: str = Field(min_length=1, max_length=1024)
    key_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    key: SecretStr
    pipelines: tuple[str, ...] = ()
    may_act_for: bool = False

    @field_validator("key")
    @classmethod
    def _base64(cls, key: SecretStr) -> SecretStr:
        try:
            raw = base64.b64decode(key.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("key must be base64") from None
        if len(raw) < 16:
            raise ValueError("key must hold at least 16 bytes")
        return key

    @property
    def secret(self) -> bytes:
        """The raw HMAC key (never log it)."""
        return base64.b64decode(self.key.get_secret_value())

    @property
    def grant(self) -> Grant:
        return Grant(pipelines=frozenset(self.pipelines))


def new_caller_key(
    principal: str, pipelines: Iterable[str], *, may_act_for: bool = False
) -> CallerKey:
    """A fresh random key for ``principal``."""
    return CallerKey(
        principal=principal,
        key_id=secrets.token_hex(8),
        key=SecretStr(base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode()),
        pipelines=tuple(pipelines),
        may_act_for=may_act_for,
    )


class CallerKeys:
    """The keys of a callers file, by key id."""

    def __init__(self, keys: Iterable[CallerKey] = ()) -> None:
        self._by_id: dict[str, CallerKey] = {}
        for key in keys:
            if key.key_id in self._by_id:
                raise ConfigError(f"two caller keys have the id {key.key_id!r}")
            self._by_id[key.key_id] = key

    @classmethod
    def load(cls, path: Path) -> CallerKeys:
        """Read a callers file; refuses one that group or others may read. Missing: empty."""
        document = read_yaml(path, "callers file", private=True)
        items = document.get("callers", [])
        if not isinstance(items, list):
            raise ConfigError(f"callers file {path}: 'callers' must be a list")
        try:
            return cls(CallerKey.model_validate(item) for item in items)
        except PydanticValidationError as exc:
            raise ConfigError(f"callers file {path}: invalid entry: {_safe(exc)}") from None

    def save(self, path: Path) -> None:
        write_private_yaml(path, {"callers": [_plain(key) for key in self._by_id.values()]})

    def add(self, key: CallerKey) -> CallerKeys:
        return CallerKeys([*self._by_id.values(), key])

    def get(self, key_id: str) -> CallerKey | None:
        return self._by_id.get(key_id)

    @property
    def keys(self) -> tuple[CallerKey, ...]:
        return tuple(self._by_id.values())

    def only(self, path: Path) -> CallerKey:
        """The one key of a caller's own key file."""
        if len(self._by_id) != 1:
            raise ConfigError(f"key file {path} must hold exactly one key, not {len(self)}")
        return next(iter(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)


def _plain(key: CallerKey) -> dict[str, object]:
    return {
        "principal": key.principal,
        "key_id": key.key_id,
        "key": key.key.get_secret_value(),
        "pipelines": list(key.pipelines),
        "may_act_for": key.may_act_for,
    }


def _safe(exc: PydanticValidationError) -> str:
    """The validation problems without the input values (a bad entry may still hold a key)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
