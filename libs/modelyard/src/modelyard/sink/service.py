"""The audit sink: ``yard.audit`` (and ``yard.control``) into the audit store.

A handler (``handler.py``) on the one worker loop, in consumer group ``<prefix>.g.audit-sink``:
several sinks share the partitions, each committing a message's offset only after its rows are
committed in the store. The store is migrated to the newest schema on start. Control records
are judged as routers judge them, with the keyring (``control.py``).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from modelyard.audit.store import open_store
from modelyard.audit.store.process import WriterProcess
from modelyard.control.chain import Positioned
from modelyard.control.topic import read_records
from modelyard.control.verify import ControlVerifier
from modelyard.kafka.config import BACKGROUND_PRODUCER
from modelyard.kafka.worker import GroupIntake, WorkerLoop
from modelyard.sink.control import ControlFold
from modelyard.sink.handler import SinkHandler
from modelyard.sink.settings import SinkSettings
from modelyard.topics import audit_topic, control_topic

__all__ = [
    "GC_GEN0_THRESHOLD",
    "GIL_SWITCH_S",
    "AuditSink",
    "audit_dlq_topic",
    "sink_group",
    "tune_interpreter",
]

# Python's default. At 0.5 ms it helped while the statements ran on a thread of this process
# (each gave the GIL up and had to get it back from the parsing thread); since they run in the
# writer process, 0.5 ms and 5 ms measured the same within noise (bench/sink_bench.py: SQLite
# sink/bare 0.64-0.77 in six runs, 0.67-0.80 in four)
GIL_SWITCH_S = 0.005
# a record leaves ~6 tracked objects (its rows' tuples, a ticket) that live until its batch is
# written: at Python's default of 700 allocations the collector ran ~6 times per 1,000
# records, re-scanning the batches in flight and, every few runs, everything start-up made,
# holding the GIL from the writer each time (~0.2 s per 40,000 records in bench/sink_bench.py);
# they are freed by reference counting, so rarer collections cost no memory
GC_GEN0_THRESHOLD = 50_000


def audit_dlq_topic(prefix: str) -> str:
    """Where the sink dead-letters records it cannot store: ``yard.audit.dlq``."""
    return f"{audit_topic(prefix)}.dlq"


def sink_group(prefix: str) -> str:
    return f"{prefix}.g.audit-sink"


class AuditSink:
    """One sink worker: ``start()`` runs it on its own thread, ``stop()`` drains and ends it."""

    def __init__(
        self,
        settings: SinkSettings,
        *,
        registry: CollectorRegistry | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        prefix, batch_size, control = settings.topic_prefix, settings.batch_size, settings.control
        verifier = _verifier(settings) if control else None  # a bad keyring: refused first
        url = settings.audit_store.get_secret_value()
        open_store(url, create=True).close()  # migrated here: a store that cannot be is refused
        self.store = WriterProcess(url)  # writes with a GIL of its own (audit/store/process.py)
        topics = (audit_topic(prefix), *((control_topic(prefix),) if control else ()))
        intake = GroupIntake(
            topics=topics, group_id=sink_group(prefix),
            consumer_overrides=dict(consumer_overrides or {}),
        )  # fmt: skip
        # room for the batches held (filling, waiting, being written) and the next: intake that
        # pauses drops what librdkafka prefetched
        options = settings.loop_options(
            poll_batch_size=min(batch_size, settings.poll_batch_size),
            max_inflight=max(settings.max_inflight, batch_size * 8),
        )
        self.loop = WorkerLoop(
            intake, options, name="audit-sink", producer_overrides=BACKGROUND_PRODUCER
        )
        fold = None
        if verifier is not None:
            kafka = options.kafka

            def history() -> Sequence[Positioned]:
                return read_records(settings.bootstrap, prefix=prefix, kafka=kafka)

            fold = (control_topic(prefix), ControlFold(verifier, history))
        self.handler = SinkHandler(
            self.loop.outbox, self.store, audit_topic=audit_topic(prefix),
            dlq_topic=audit_dlq_topic(prefix), control=fold, batch_size=batch_size,
            max_wait_s=settings.max_wait_s, registry=registry,
        )  # fmt: skip

    def start(self) -> None:
        self.handler.start_writer()
        self.loop.start(self.handler)

    def wait_ready(self, timeout_s: float) -> bool:
        return self.loop.wait_ready(timeout_s)

    @property
    def running(self) -> bool:
        return self.loop.running

    @property
    def failure(self) -> BaseException | None:
        return self.loop.failure

    def health(self) -> dict[str, bool]:
        return self.loop.health()

    def stop(self) -> None:
        """Drain (held records are written and committed), then close the store."""
        self.loop.stop()
        self.handler.stop_writer()
        self.store.close()


def _verifier(settings: SinkSettings) -> ControlVerifier:
    """The routers' verifier over the keyring; without one, signatures go unchecked (rows say
    ``unverified``) while consistency is still checked."""
    if settings.keyring is None:
        return ControlVerifier(None)
    return ControlVerifier.from_file(settings.keyring)


def tune_interpreter() -> None:
    """Set up the process that runs a sink (``modelyard audit-sink``, the bench): a GIL switch
    interval of ``GIL_SWITCH_S``; what start-up made moved out of the collector's way
    (``gc.freeze``) and a young generation of ``GC_GEN0_THRESHOLD`` objects. Process-wide, so
    the sink's entry point calls it, never the sink itself."""
    sys.setswitchinterval(GIL_SWITCH_S)
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
