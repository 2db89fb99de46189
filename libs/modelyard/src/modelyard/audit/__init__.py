"""Audit: who called which version of which model, when, on what, with what outcome."""

from modelyard.audit.records import (
    AuditRecord,
    HopRecord,
    RequestRecord,
    decode_audit,
    digest_fields,
    encode_audit,
    encode_audit_values,
    utc,
)

__all__ = [
    "AuditRecord",
    "HopRecord",
    "RequestRecord",
    "decode_audit",
    "digest_fields",
    "encode_audit",
    "encode_audit_values",
    "utc",
]
