"""Topic names, in one place (see docs/wire-format.md). The prefix defaults to ``yard``."""

from __future__ import annotations

__all__ = [
    "audit_dlq_topic",
    "audit_sink_group",
    "audit_topic",
    "control_topic",
    "model_dlq_topic",
    "model_group",
    "model_input_topic",
    "model_reply_topic",
    "pipeline_dlq_topic",
    "pipeline_inbox_topic",
    "pipeline_ingress_topic",
    "pipeline_results_topic",
    "pipeline_shadow_topic",
    "pipeline_topics",
    "router_group",
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


def model_group(prefix: str, model: str, version: str) -> str:
    """The consumer group every worker of one model version joins: ``yard.g.<model>.<version>``."""
    return f"{prefix}.g.{model}.{version}"


def pipeline_ingress_topic(prefix: str, pipeline: str) -> str:
    """Where producers write a pipeline's requests: ``yard.p.<pipeline>.in``."""
    return f"{prefix}.p.{pipeline}.in"


def pipeline_inbox_topic(prefix: str, pipeline: str) -> str:
    """The router's reply inbox: stage replies, pinned to the partition of the request's ingress."""
    return f"{prefix}.p.{pipeline}.router"


def pipeline_results_topic(prefix: str, pipeline: str) -> str:
    """One final result per request, stamped with the versions that served it."""
    return f"{prefix}.p.{pipeline}.out"


def pipeline_shadow_topic(prefix: str, pipeline: str) -> str:
    """Shadow replies, next to the primary reply of the same request and stage."""
    return f"{prefix}.p.{pipeline}.shadow"


def pipeline_dlq_topic(prefix: str, pipeline: str) -> str:
    return f"{prefix}.p.{pipeline}.dlq"


def router_group(prefix: str, pipeline: str) -> str:
    """The consumer group every router instance of a pipeline joins."""
    return f"{prefix}.g.p.{pipeline}.router"


def audit_topic(prefix: str) -> str:
    """Hop and request records of every pipeline."""
    return f"{prefix}.audit"


def audit_dlq_topic(prefix: str) -> str:
    """Where the audit sink dead-letters records it cannot store."""
    return f"{prefix}.audit.dlq"


def audit_sink_group(prefix: str) -> str:
    """The consumer group of the audit sinks (they share the audit topic's partitions)."""
    return f"{prefix}.g.audit-sink"


def control_topic(prefix: str) -> str:
    return f"{prefix}.control"


def pipeline_topics(prefix: str, pipeline: str) -> list[str]:
    """Ingress, router inbox, results, dead letters and shadow results of one pipeline.

    Created with one partition count: the router pins a request's replies to the inbox
    partition numbered like its ingress partition.
    """
    makers = (
        pipeline_ingress_topic,
        pipeline_inbox_topic,
        pipeline_results_topic,
        pipeline_dlq_topic,
        pipeline_shadow_topic,
    )
    return [make(prefix, pipeline) for make in makers]
