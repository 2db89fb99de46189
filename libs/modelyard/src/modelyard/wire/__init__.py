"""What crosses Kafka: the msgpack envelope, the headers, and OIP v2 JSON values.

The format is specified for people in ``docs/wire-format.md``; keep the two in step.
"""

from modelyard.wire.envelope import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_MSGPACK,
    SCHEMA_VERSION,
    Envelope,
    ErrorInfo,
    decode_envelope,
    encode_envelope,
)
from modelyard.wire.headers import Headers, MessageMeta

__all__ = [
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_MSGPACK",
    "SCHEMA_VERSION",
    "Envelope",
    "ErrorInfo",
    "Headers",
    "MessageMeta",
    "decode_envelope",
    "encode_envelope",
]
