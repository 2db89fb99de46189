"""The audit store: requests, hops, payloads, checkpoints and control changes in SQLite (the
embedded default) or PostgreSQL (production), written by ``modelyard audit-sink`` and read by
``modelyard audit query|verify|prove``, ``trace`` and ``replay``.

``open_store(url)`` opens one; ``migrate(url)`` creates or upgrades its schema.
"""

from modelyard.audit.store.dialect import redact_url
from modelyard.audit.store.migrate import HEAD, current_version, migrate
from modelyard.audit.store.parse import Parsed, parse_record
from modelyard.audit.store.rows import (
    CheckpointRow,
    ControlChangeRow,
    Filters,
    HopPayload,
    HopRow,
    PayloadRow,
    RequestRow,
    Verdict,
)
from modelyard.audit.store.store import AuditStore, Batch, open_store

__all__ = [
    "HEAD",
    "AuditStore",
    "Batch",
    "CheckpointRow",
    "ControlChangeRow",
    "Filters",
    "HopPayload",
    "HopRow",
    "Parsed",
    "PayloadRow",
    "RequestRow",
    "Verdict",
    "current_version",
    "migrate",
    "open_store",
    "parse_record",
    "redact_url",
]
