"""Signing control records: the bytes a signature covers, and the one way a record is signed.

A signature covers ``canonical_json`` (:mod:`modelyard.keys`) of the record as JSON, every field
present, without ``signature`` (``key_id`` included, so a signature cannot be moved to another
key). It is computed over the *parsed* record, so what a reader verifies is exactly what it
applies, whatever spacing or key order the bytes on the topic have.

The actor of a signed record is the signing key's name: whoever holds a key can act only as
that key's name, and a reader rejects a record whose actor is not the name of the key that
signed it.
"""

from __future__ import annotations

from datetime import datetime

from modelyard.control.changes import Change
from modelyard.control.routing import PipelineRouting
from modelyard.control.state import ControlRecord, make_record
from modelyard.keys import SigningKey, canonical_json

__all__ = ["record_payload", "sign_record", "signed_record"]


def record_payload(record: ControlRecord) -> bytes:
    """The bytes ``record.signature`` covers."""
    document = record.model_dump(mode="json", by_alias=True, exclude={"signature"})
    return canonical_json(document)


def sign_record(record: ControlRecord, key: SigningKey) -> ControlRecord:
    """``record`` as ``key`` signs it: actor = the key's name, key id and signature set."""
    unsigned = record.model_copy(
        update={"actor": key.name, "key_id": key.key_id, "signature": None}
    )
    return unsigned.model_copy(update={"signature": key.sign(record_payload(unsigned))})


def signed_record(
    current: PipelineRouting,
    change: Change,
    *,
    signer: SigningKey,
    reason: str = "",
    at: datetime | None = None,
    anchor: ControlRecord | None = None,
) -> ControlRecord:
    """The record of applying ``change`` to ``current``, signed by ``signer`` (``anchor``, on a
    writer key's record: :mod:`modelyard.control.anchor`; the signature covers it)."""
    record = make_record(current, change, actor=signer.name, reason=reason, at=at, anchor=anchor)
    return sign_record(record, signer)
