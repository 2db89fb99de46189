"""The first audit store schema: requests, hops, payloads, checkpoints, control changes.

Revision ID: 0001
Revises:
Create Date: 2026-12-06

Every table has a natural unique key, so a record delivered twice is inserted once
(``INSERT ... ON CONFLICT DO NOTHING``): a chained record by its chain position (writer,
partition, seq), an unchained one (written before chains, or by a writer without one) by what
it describes. ``raw`` keeps each record's exact bytes for ``modelyard audit verify``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)
_UNCHAINED = sa.text("chain_writer IS NULL")


def _chain_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("chain_writer", sa.Text),
        sa.Column("chain_partition", sa.Integer),
        sa.Column("chain_seq", sa.BigInteger),
        sa.Column("chain_prev", sa.Text),
        sa.Column("chain_hash", sa.Text, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
    ]


def _id() -> sa.Column[object]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)


def _unique(name: str, table: str, columns: list[str], *, unchained: bool = False) -> None:
    if unchained:
        where = _UNCHAINED
        op.create_index(
            name, table, columns, unique=True, sqlite_where=where, postgresql_where=where
        )
    else:
        op.create_index(name, table, columns, unique=True)


def upgrade() -> None:
    _requests()
    _hops()
    _payloads()
    _checkpoints()
    _control_changes()


def _requests() -> None:
    op.create_table(
        "requests",
        _id(),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("pipeline", sa.Text, nullable=False),
        sa.Column("principal", sa.Text),
        sa.Column("auth", sa.Text),
        sa.Column("received_at", _TIME, nullable=False),
        sa.Column("finished_at", _TIME, nullable=False),
        sa.Column("served_by", sa.Text, nullable=False),  # JSON: stage -> "model:version"
        sa.Column("skipped", sa.Text, nullable=False),  # JSON list of stages
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("trace_id", sa.Text),
        sa.Column("input_digest", sa.Text, nullable=False),
        sa.Column("result_digest", sa.Text),
        sa.Column("result_fields", sa.LargeBinary),
        sa.Column("result_bytes", sa.BigInteger),
        sa.Column("spec_version", sa.Integer, nullable=False),
        *_chain_columns(),
    )
    _unique("requests_chain", "requests", ["chain_writer", "chain_partition", "chain_seq"])
    _unique("requests_unchained", "requests", ["request_id"], unchained=True)
    op.create_index("requests_request_id", "requests", ["request_id"])
    op.create_index("requests_received_at", "requests", ["received_at"])
    op.create_index("requests_principal", "requests", ["principal", "received_at"])
    op.create_index("requests_pipeline", "requests", ["pipeline", "received_at"])


def _hops() -> None:
    op.create_table(
        "hops",
        _id(),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("pipeline", sa.Text, nullable=False),
        sa.Column("principal", sa.Text),
        sa.Column("stage", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("shadow", sa.Boolean, nullable=False),
        sa.Column("dispatched_at", _TIME, nullable=False),
        sa.Column("finished_at", _TIME, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("input_digest", sa.Text, nullable=False),
        sa.Column("output_digest", sa.Text),
        sa.Column("agrees", sa.Boolean),
        sa.Column("span_id", sa.Text),
        sa.Column("trace_id", sa.Text),
        *_chain_columns(),
    )
    _unique("hops_chain", "hops", ["chain_writer", "chain_partition", "chain_seq"])
    _unique("hops_unchained", "hops", ["request_id", "stage", "attempt", "role"], unchained=True)
    op.create_index("hops_request_id", "hops", ["request_id"])
    op.create_index("hops_stage", "hops", ["stage", "model", "version", "dispatched_at"])
    op.create_index("hops_dispatched_at", "hops", ["dispatched_at"])


def _payloads() -> None:
    op.create_table(
        "payloads",
        _id(),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("stage", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("direction", sa.Text, nullable=False),  # input | output
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("fields", sa.LargeBinary),  # msgpack; NULL: digest only
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("chain_writer", sa.Text),
        sa.Column("chain_partition", sa.Integer),
        sa.Column("chain_seq", sa.BigInteger),
        sa.CheckConstraint("direction IN ('input', 'output')", name="payloads_direction"),
    )
    _unique(
        "payloads_chain", "payloads",
        ["chain_writer", "chain_partition", "chain_seq", "direction"],
    )  # fmt: skip
    _unique(
        "payloads_unchained", "payloads",
        ["request_id", "stage", "attempt", "role", "direction"], unchained=True,
    )  # fmt: skip
    op.create_index("payloads_hop", "payloads", ["request_id", "stage"])


def _checkpoints() -> None:
    op.create_table(
        "checkpoints",
        _id(),
        sa.Column("writer", sa.Text, nullable=False),
        sa.Column("chain_partition", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("head", sa.Text, nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
    )
    _unique("checkpoints_position", "checkpoints", ["writer", "chain_partition", "seq"])


def _control_changes() -> None:
    op.create_table(
        "control_changes",
        _id(),
        sa.Column("pipeline", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger),
        sa.Column("who", sa.Text),
        sa.Column("key_id", sa.Text),
        sa.Column("what", sa.Text),  # JSON: the change asked for
        sa.Column("why", sa.Text),
        sa.Column("at", _TIME),
        sa.Column("signature", sa.Text),
        sa.Column("accepted", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("topic_partition", sa.Integer, nullable=False),
        sa.Column("topic_offset", sa.BigInteger, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
    )
    _unique("control_changes_position", "control_changes", ["topic_partition", "topic_offset"])
    op.create_index("control_changes_pipeline", "control_changes", ["pipeline", "seq"])


def downgrade() -> None:
    for table in ("control_changes", "checkpoints", "payloads", "hops", "requests"):
        op.drop_table(table)
