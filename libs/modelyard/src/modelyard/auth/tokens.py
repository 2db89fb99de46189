"""The tokens file: who may call what, and the sha256 of each bearer token (never the token).

YAML::

    tokens:
      - principal: svc-billing
        token_sha256: 3f1c...            # sha256 hex of the token; null: no token (mTLS only)
        pipelines: [docs]                # at a router; "*" for every pipeline
        models: []                       # at a stage: "name" or "name:version"; "*" for all

The same file is the allow list of every mode: a certificate's subject, or a trusted-network
header, is looked up by ``principal``. A principal may have several entries (one per token, so
tokens rotate one at a time); what it may call is the union of its entries.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from modelyard.auth._files import read_yaml, write_private_yaml
from modelyard.auth.grants import Grant
from modelyard.errors import ConfigError

__all__ = ["TokenEntry", "TokenTable", "hash_token", "new_token"]

_TOKEN_BYTES = 32  # 256 bits of randomness: never guessed, so a fast hash is enough to store it


def new_token() -> str:
    """A fresh random bearer token (URL-safe text)."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


def hash_token(token: str) -> str:
    """What the tokens file stores of a token: its sha256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenEntry(BaseModel):
    """One principal's grant, with the digest of one of its tokens (or none: mTLS only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    principal: str = Field(min_length=1, max_length=1024)
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    pipelines: tuple[str, ...] = ()
    models: tuple[str, ...] = ()

    @field_validator("principal")
    @classmethod
    def _printable(cls, name: str) -> str:
        if not name.isprintable():
            raise ValueError("a principal is printable text")
        return name

    @property
    def grant(self) -> Grant:
        return Grant(frozenset(self.pipelines), frozenset(self.models))


class TokenTable:
    """The entries of a tokens file, with constant-time token lookup."""

    def __init__(self, entries: Iterable[TokenEntry] = ()) -> None:
        self.entries = tuple(entries)
        self._grants: dict[str, Grant] = {}  # per principal; the table never changes
        self._digests = [
            (bytes.fromhex(e.token_sha256), e) for e in self.entries if e.token_sha256 is not None
        ]

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        """Read a tokens file; a missing one is empty (nobody is allowed anything)."""
        document = read_yaml(path, "tokens file", private=False)
        items = document.get("tokens", [])
        if not isinstance(items, list):
            raise ConfigError(f"tokens file {path}: 'tokens' must be a list")
        try:
            return cls(TokenEntry.model_validate(item) for item in items)
        except PydanticValidationError as exc:
            raise ConfigError(f"tokens file {path}: invalid entry: {exc}") from None

    def save(self, path: Path) -> None:
        entries = [_plain(entry) for entry in self.entries]
        write_private_yaml(path, {"tokens": entries})

    def add(self, entry: TokenEntry) -> TokenTable:
        """A table with ``entry`` appended."""
        return TokenTable([*self.entries, entry])

    def lookup(self, token: str) -> TokenEntry | None:
        """The entry of ``token``, comparing digests in constant time with every entry (the
        time taken says nothing about which entry, or how much of a digest, matched)."""
        presented = hashlib.sha256(token.encode()).digest()
        found: TokenEntry | None = None
        for digest, entry in self._digests:
            if hmac.compare_digest(digest, presented) and found is None:
                found = entry
        return found

    def grant_of(self, principal: str) -> Grant:
        """What ``principal`` may call: the union of its entries (nothing when it has none)."""
        grant = self._grants.get(principal)
        if grant is None:
            grant = Grant.union(e.grant for e in self.entries if e.principal == principal)
            self._grants[principal] = grant
        return grant

    def principals(self) -> list[str]:
        return sorted({e.principal for e in self.entries})


def _plain(entry: TokenEntry) -> dict[str, object]:
    item = entry.model_dump()
    item["pipelines"], item["models"] = list(entry.pipelines), list(entry.models)
    return item
