"""Audit: who called which version of which model, when, on what, with what outcome."""

from modelyard.audit.records import (
    AuditRecord,
    HopRecord,
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
    "AuditRecord",
    "HopRecord",
    "RequestRecord",
    "decode_audit",
    "digest_fields",
    "digest_packed",
    "encode_audit",
    "encode_audit_values",
    "encode_hop_record",
    "encode_request_record",
    "utc",
]
