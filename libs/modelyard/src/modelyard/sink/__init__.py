"""The audit sink: a worker that stores the audit and control topics in the audit store."""

from modelyard.sink.service import AuditSink, audit_dlq_topic, sink_group, tune_interpreter
from modelyard.sink.settings import SinkSettings

__all__ = ["AuditSink", "SinkSettings", "audit_dlq_topic", "sink_group", "tune_interpreter"]
