"""Signed monitor documents (baselines, labels): JSON objects with ``key_id`` and ``signature``
(Ed25519 over the canonical JSON of everything else, as control records are signed), so the
monitor takes a baseline from an operator and a label from a reviewer it can name, never from
whoever could write to a topic.
"""

from __future__ import annotations

import json
from typing import Any

from modelyard.errors import DecodeError, UnauthenticatedError
from modelyard.keys import KeyEntry, Keyring, SigningKey, canonical_json

__all__ = ["sign_document", "verified_document"]


def sign_document(document: dict[str, Any], key: SigningKey) -> bytes:
    """``document`` signed by ``key`` (its ``signer`` is the key's name), as JSON bytes."""
    body = {**document, "signer": key.name, "key_id": key.key_id}
    return json.dumps({**body, "signature": key.sign(canonical_json(body))}).encode()


def verified_document(value: bytes, keyring: Keyring | None) -> tuple[dict[str, Any], str]:
    """(the document, its signer's name); DecodeError when ``value`` is no JSON object,
    UnauthenticatedError when its signature is missing, unknown or wrong. Without a keyring
    (development only) the document's own ``signer`` is taken as it stands."""
    try:
        document = json.loads(value)
    except ValueError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise DecodeError("not a JSON object")
    if keyring is None:
        return document, str(document.get("signer") or "unverified")
    entry = _signer(document, keyring)
    return document, entry.name


def _signer(document: dict[str, Any], keyring: Keyring) -> KeyEntry:
    key_id, signature = document.get("key_id"), document.get("signature")
    if not isinstance(key_id, str) or not isinstance(signature, str):
        raise UnauthenticatedError("the document is not signed")
    body = {k: v for k, v in document.items() if k != "signature"}
    entry = keyring.verify(key_id, canonical_json(body), signature)
    if body.get("signer") != entry.name:
        raise UnauthenticatedError(f"signer {body.get('signer')!r} but key {entry.name!r}")
    return entry
