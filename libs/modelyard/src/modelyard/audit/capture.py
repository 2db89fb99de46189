"""What an audit record keeps of the data: a payload's digest always, the fields per policy.

A pipeline's capture policy (the spec's ``audit:`` section) says whether stage inputs and
outputs are kept in full or only as digests, which fields are redacted, and how large a kept
payload may be. A redacted value is replaced by ``redacted:sha256:<hex>``, the digest of that
one field packed alone (``pack_fields({name: value})``), so equality stays provable without
the data; the payload's own digest is always that of the unredacted fields, the same digest
the hop records carry, so a payload is matched to its hop without trusting either.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from modelyard.wire.envelope import pack_fields

__all__ = ["REDACTED_PREFIX", "encode_payload", "redacted_value"]

REDACTED_PREFIX = "redacted:sha256:"


def encode_payload(
    packed: bytes,
    fields: Mapping[str, Any] | None = None,
    *,
    keep: bool,
    max_bytes: int,
    redact: frozenset[str] = frozenset(),
) -> bytes:
    """The JSON of a :class:`~modelyard.audit.records.Payload` over ``packed`` (the fields as
    ``pack_fields`` packed them). ``fields`` are needed only when some of ``redact`` are there.
    """
    digest, size = hashlib.sha256(packed).hexdigest().encode(), len(packed)
    kept = b"null"
    if keep and size <= max_bytes:
        hidden = redact.intersection(fields) if fields is not None and redact else ()
        if hidden and fields is not None:
            packed = pack_fields({k: redacted_value(k, v) if k in hidden else v
                                  for k, v in fields.items()})  # fmt: skip
        kept = b'"' + base64.b64encode(packed) + b'"'
    return b'{"digest":"%s","fields":%s,"bytes":%d}' % (digest, kept, size)


def redacted_value(name: str, value: Any) -> str:
    """What a redacted field holds instead of ``value``: the digest of the field packed alone."""
    return REDACTED_PREFIX + hashlib.sha256(pack_fields({name: value})).hexdigest()
