"""The Kafka ACLs one pipeline needs, least privilege per principal, and applying them.

:func:`pipeline_acls` is the table docs/brokers.md shows ("ACLs"): the router reads its ingress
and inbox and writes stage inputs, results, dead letters, shadow copies, audit records and its
callers' reply topics; each model version's workers read only their own input topic and write
replies and their dead letters; operators alone write the control topic, which the router and
operators read. Topics are created by an operator or ``modelyard init`` beforehand (nobody else
holds CREATE). Every ACL is an ALLOW on a literal name, except the callers' reply topics (a
prefix: gateways name a fresh one per process); on a cluster whose authorizer denies what no ACL
allows (``allow.everyone.if.no.acl.found=false``), everything else is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from modelyard.broker.admin import admin_client
from modelyard.topics import (
    audit_dlq_topic,
    audit_sink_group,
    audit_topic,
    control_topic,
    model_dlq_topic,
    model_group,
    model_input_topic,
    model_reply_topic,
    pipeline_dlq_topic,
    pipeline_inbox_topic,
    pipeline_ingress_topic,
    pipeline_results_topic,
    pipeline_shadow_topic,
    router_group,
)

__all__ = ["READER_GROUPS", "Acl", "PipelinePrincipals", "apply_acls", "pipeline_acls", "principal"]

Operation = Literal["read", "write", "create", "describe"]
# Readers that assign partitions and never join a group still name one (librdkafka requires it:
# modelyard-reader-*, modelyard-control-reader-*, modelyard-trace-*) and look its coordinator up;
# DESCRIBE on these names (not READ: no joins, no commits) keeps that lookup from being refused.
READER_GROUPS = "modelyard-"


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule: ``principal`` may ``operation`` on the topic or group ``name`` (or on
    every name starting with it, when ``prefixed``)."""

    principal: str
    resource: Literal["topic", "group"]
    name: str
    operation: Operation
    prefixed: bool = False

    def __str__(self) -> str:
        pattern = "prefixed" if self.prefixed else "literal"
        what = f"{self.operation.upper()} {self.resource} {self.name}"
        return f"ALLOW {self.principal} {what} ({pattern})"

    def binding(self) -> AclBinding:
        """The rule as confluent-kafka's ``AclBinding`` (any host)."""
        return AclBinding(
            ResourceType.TOPIC if self.resource == "topic" else ResourceType.GROUP,
            self.name,
            ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL,
            self.principal,
            "*",
            getattr(AclOperation, self.operation.upper()),
            AclPermissionType.ALLOW,
        )


@dataclass(frozen=True)
class PipelinePrincipals:
    """Who runs what: the router's principal, each stage version's (``(model, version)`` →
    principal), the operators' and the audit sink's."""

    router: str
    stages: Mapping[tuple[str, str], str] = field(default_factory=dict)
    operators: Sequence[str] = ()
    audit_sink: str | None = None


def principal(name: str) -> str:
    """``name`` as a Kafka principal: ``User:<name>`` unless it names its type already."""
    return name if ":" in name else f"User:{name}"


def pipeline_acls(
    pipeline: str, who: PipelinePrincipals, prefix: str = "yard", reply_prefix: str | None = None
) -> list[Acl]:
    """Every ACL ``pipeline`` needs (sorted, no duplicates). ``reply_prefix`` is where callers'
    reply topics start (default ``<prefix>.gw.``, the gateway's)."""
    acls = [
        *_router(pipeline, who.router, who.stages, prefix, reply_prefix or f"{prefix}.gw."),
        *(acl for (m, v), p in who.stages.items() for acl in _stage(pipeline, m, v, p, prefix)),
        *(acl for p in who.operators for acl in _operator(p, prefix)),
        *(_audit_sink(who.audit_sink, prefix) if who.audit_sink else []),
    ]
    return sorted(set(acls))


def _router(
    pipeline: str, who: str, stages: Iterable[tuple[str, str]], prefix: str, reply_prefix: str
) -> list[Acl]:
    reads = [pipeline_ingress_topic(prefix, pipeline), pipeline_inbox_topic(prefix, pipeline),
             control_topic(prefix)]  # fmt: skip
    writes = [
        *(model_input_topic(prefix, model, version) for model, version in stages),
        pipeline_results_topic(prefix, pipeline),
        pipeline_dlq_topic(prefix, pipeline),
        pipeline_shadow_topic(prefix, pipeline),
        audit_topic(prefix),
        # a guard's rollback: routers sign with a writer key, which the keyring lets sign only
        # guard retreats, so the broker's write right is no wider than that
        control_topic(prefix),
    ]
    return [
        *(Acl(who, "topic", t, "read") for t in reads),
        Acl(who, "group", router_group(prefix, pipeline), "read"),
        Acl(who, "group", READER_GROUPS, "describe", prefixed=True),
        *(Acl(who, "topic", t, "write") for t in writes),
        Acl(who, "topic", reply_prefix, "write", prefixed=True),
    ]


def _stage(pipeline: str, model: str, version: str, who: str, prefix: str) -> list[Acl]:
    writes = [
        model_reply_topic(prefix, model, version),
        model_dlq_topic(prefix, model, version),
        pipeline_inbox_topic(prefix, pipeline),  # the router's reply-to
        pipeline_shadow_topic(prefix, pipeline),  # the reply-to of shadow copies
    ]
    return [
        Acl(who, "topic", model_input_topic(prefix, model, version), "read"),
        Acl(who, "group", model_group(prefix, model, version), "read"),
        *(Acl(who, "topic", t, "write") for t in writes),
    ]


def _operator(who: str, prefix: str) -> list[Acl]:
    topic = control_topic(prefix)
    return [
        *(Acl(who, "topic", topic, op) for op in ("read", "write", "create")),
        Acl(who, "group", READER_GROUPS, "describe", prefixed=True),
    ]


def _audit_sink(who: str, prefix: str) -> list[Acl]:
    return [
        *(Acl(who, "topic", t, "read") for t in (audit_topic(prefix), control_topic(prefix))),
        Acl(who, "group", audit_sink_group(prefix), "read"),
        Acl(who, "topic", audit_dlq_topic(prefix), "write"),
    ]


def apply_acls(
    bootstrap: str,
    acls: Sequence[Acl],
    kafka: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Create ``acls`` on the cluster (as a principal allowed to: a super user); existing ones
    are left as they are. Raises on the first refusal."""
    admin = admin_client(bootstrap, kafka)
    futures = admin.create_acls([acl.binding() for acl in acls], request_timeout=timeout_s)
    for future in futures.values():
        future.result(timeout=timeout_s)
