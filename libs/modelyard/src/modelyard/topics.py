"""Topic names, in one place (see docs/wire-format.md). The prefix defaults to ``yard``."""

from __future__ import annotations

__all__ = [
    "control_topic",
    "model_dlq_topic",
    "model_input_topic",
    "model_reply_topic",
    "pipeline_dlq_topic",
]


def model_input_topic(prefix: str, model: str, version: str) -> str:
    """Where requests for one model version are produced: ``yard.m.<model>.<version>``."""
    return f"{prefix}.m.{model}.{version}"


def model_reply_topic(prefix: str, model: str, version: str) -> str:
    """Replies to requests that named no ``reply-to`` header."""
    return f"{prefix}.m.{model}.{version}.replies"


def model_dlq_topic(prefix: str, model: str, version: str) -> str:
    """Dead letters of requests that belong to no pipeline (or could not be decoded)."""
    return f"{prefix}.m.{model}.{version}.dlq"


def pipeline_dlq_topic(prefix: str, pipeline: str) -> str:
    return f"{prefix}.p.{pipeline}.dlq"


def control_topic(prefix: str) -> str:
    return f"{prefix}.control"
