"""Audit: who called which version of which model, when, on what, with what outcome."""

from modelyard.audit.capture import encode_payload, redacted_value
from modelyard.audit.records import (
    AnyRecord,
    AuditRecord,
    ChainLink,
    CheckpointRecord,
    HopRecord,
    Payload,
    RequestRecord,
    decode_audit,
    digest_fields,
    digest_packed,
    encode_audit,
    encode_audit_values,
    encode_hop_record,
    encode_request_record,
    utc,
)

__all__ = [
    "AnyRecord",
    "AuditRecord",
    "ChainLink",
    "CheckpointRecord",
    "HopRecord",
    "Payload",
    "RequestRecord",
    "decode_audit",
    "digest_fields",
    "digest_packed",
    "encode_audit",
    "encode_audit_values",
    "encode_hop_record",
    "encode_payload",
    "encode_request_record",
    "redacted_value",
    "utc",
]
