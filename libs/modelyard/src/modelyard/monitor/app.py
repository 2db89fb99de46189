"""The faust-streaming adapter: the only module that imports faust.

One agent reads the audit and labels topics in batches (``take_events``), folds each hop into
its source partition's :class:`TumblingWindows` (and each label, joined with the hops it
remembers, into the window of the label's time) and mirrors the windows a batch changed into a
table backed by a changelog topic (one write per changed window per batch, not per hop). The
changelog partition of a window is its source partition, so the instance that takes a partition
over (a restart, a rebalance) restores that partition's windows with it. A timer publishes the
windows that closed to ``<prefix>.monitor`` and forgets those past retention.

A second agent, the judge, reads ``<prefix>.monitor`` itself (one partition: one judge in the
group), keeps the partial summaries in a changelog-backed table, and once a window's partials
have stopped arriving for ``settle_s`` combines them, assesses every version against its
reference (``judge.py``), publishes the assessments to the same topic, exports them as gauges
and hands them to the guard.

Each hop once, as far as the changelog goes: with a batch's windows goes each partition's
counted offset, and a record faust hands over again below it (a rebalance, a restart since the
last offset commit) is skipped. A monitor killed while a batch's changelog writes are on their
way can count that batch twice (docs/monitor.md, Delivery).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, cast

import faust
import structlog
from faust.streams import Stream
from faust.tables.manager import TableManager
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, EventT, StreamT
from faust.types.transports import TransportT

from modelyard.errors import DecodeError, UnauthenticatedError
from modelyard.graph.spec import DriftPolicy
from modelyard.keys import Keyring
from modelyard.monitor.baselines import Baseline
from modelyard.monitor.guard import MonitorGuard
from modelyard.monitor.hops import WindowKey, parse_hop
from modelyard.monitor.judge import assess
from modelyard.monitor.labels import LabelJoin, labels_topic, parse_label
from modelyard.monitor.metrics import MonitorMetrics
from modelyard.monitor.offsets import CountedOffsets
from modelyard.monitor.settings import MonitorSettings, monitor_group, monitor_topic
from modelyard.monitor.summary import WindowSummary, combine, encode_summary, summary_key
from modelyard.monitor.windows import TumblingWindows, Window
from modelyard.topics import audit_topic

__all__ = ["Judging", "MonitorApp", "faust_credentials"]

log = structlog.get_logger(__name__)

Span = tuple[str, str, float]  # pipeline, stage, window start: what is judged together


def faust_credentials(kafka: Mapping[str, Any]) -> faust.types.auth.CredentialsT | None:
    """faust's credentials for the librdkafka security settings every service takes
    (``MODELYARD_KAFKA_CONFIG``): SASL (PLAIN, SCRAM-SHA-256/512) and SSL with a CA and a
    client certificate. The other librdkafka settings (tuning) have no faust equivalent here and
    are not passed."""
    protocol = str(kafka.get("security.protocol", "PLAINTEXT")).upper()
    context = _ssl_context(kafka) if protocol.endswith("SSL") else None
    if protocol.startswith("SASL"):
        mechanism = kafka.get("sasl.mechanism") or kafka.get("sasl.mechanisms") or "PLAIN"
        return faust.SASLCredentials(
            username=kafka.get("sasl.username"), password=kafka.get("sasl.password"),
            mechanism=str(mechanism), ssl_context=context,
        )  # fmt: skip
    return faust.SSLCredentials(context) if context is not None else None


def _ssl_context(kafka: Mapping[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=kafka.get("ssl.ca.location"))
    cert = kafka.get("ssl.certificate.location")
    if cert:
        context.load_cert_chain(cert, kafka.get("ssl.key.location"), kafka.get("ssl.key.password"))
    return context


class _Consumer(AIOKafkaConsumer):
    """faust's Kafka consumer, its acked offsets made a set again before each commit.

    faust marks the offsets between the last record it read and one that comes after a jump
    as done (a gap: compacted away, it assumes) and merges them into the acked offsets when it
    commits, without looking whether some were acked already. After a seek to the committed
    offset (a restart, a rebalance) the jump can span records it reads again, so the same
    offsets go in twice; its commit takes the first run of consecutive offsets, which
    duplicates cut to one or two, and a partition's commit then crawls on by one offset per
    commit (seen: about 130 offsets a minute while 200 hops a second came in). Here the gaps are
    merged first, each offset once, and offsets below the committed one (done already) dropped.
    """

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        if acked:
            done, gaps, top = set(acked), self._gap[tp], max(acked)
            for gap in gaps.overlap(0, top):
                done.update(range(gap.begin, gap.end))
                top = max(top, gap.end - 1)
            gaps.chop(0, top + 1)
            committed = self._committed_offset[tp]
            acked[:] = sorted(o for o in done if committed is None or o >= committed)
            self._acked_index[tp].intersection_update(acked)  # the dropped ones leave it too
        return super()._new_offset(tp)


class _App(faust.App):
    def _new_transport(self) -> TransportT:
        made = super()._new_transport()
        made.Consumer = _Consumer  # type: ignore[misc]  # the class it makes its consumer of
        return made


def _table_key(partition: int, window: Window) -> str:
    return f"{partition}|{window.key.label()}|{int(window.start)}"


def _offset_key(partition: int) -> str:
    """The table key of a partition's counted offset (the next audit offset to count)."""
    return f"{partition}|offset"


@dataclass(slots=True)
class Judging:
    """What the judge needs besides the windows: each pipeline's drift policy (its spec's),
    the saved baselines, the guard that acts and the keyring labels are verified against
    (None: development only, labels taken as they claim)."""

    policies: Mapping[str, DriftPolicy] = field(default_factory=dict)
    baselines: Callable[[], Mapping[tuple[str, str], Baseline]] = dict
    guard: MonitorGuard | None = None
    keyring: Keyring | None = None

    def policy_of(self, pipeline: str) -> DriftPolicy:
        return self.policies.get(pipeline) or DriftPolicy()


class MonitorApp:
    """The faust app, its two agents, two tables and timer."""

    def __init__(
        self,
        settings: MonitorSettings,
        partitions: int,
        metrics: MonitorMetrics,
        on_ready: Callable[[], None] = lambda: None,
        judging: Judging | None = None,
    ) -> None:
        self.settings, self.metrics, self._on_ready = settings, metrics, on_ready
        self.judging = judging or Judging()
        prefix = settings.topic_prefix
        self.app = _App(
            monitor_group(prefix), broker=f"kafka://{settings.bootstrap}", store="memory://",
            web_enabled=False, datadir=str(settings.state_dir / "monitor"),
            topic_partitions=partitions, topic_replication_factor=1,
            consumer_auto_offset_reset="earliest", producer_acks=-1,
            broker_commit_interval=settings.commit_interval_s,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=settings.session_timeout_s / 4,
            broker_rebalance_timeout=settings.session_timeout_s,
            broker_credentials=faust_credentials(settings.kafka_extra()),
            # one record per produce batch: a broker that reports a partition's end as its last
            # batch's base offset + 1 (the embedded one) would otherwise have faust recover a
            # table short of the changelog's last records
            producer_max_batch_size=1,
        )  # fmt: skip
        self._audit, self._labels = audit_topic(prefix), labels_topic(prefix)
        self.source = self.app.topic(
            self._audit, self._labels, key_serializer="raw", value_serializer="raw"
        )
        self.out = self.app.topic(
            monitor_topic(prefix), key_serializer="raw", value_serializer="raw", partitions=1
        )
        self.table = self.app.Table("windows", partitions=partitions, key_type=str)
        self.partials = self.app.Table("partials", partitions=1, key_type=str)
        self._windows: dict[int, TumblingWindows] = {}
        self._counted: dict[int, CountedOffsets] = {}  # audit partition -> what it counted
        self._joins: dict[int, LabelJoin] = {}
        self._deletes: dict[int, list[str]] = {}
        self._spans: dict[Span, set[str]] | None = None  # partial keys per span, once indexed
        self._dirty: dict[Span, float] = {}  # spans with new partials: when the last came
        self._ready = False
        self.app.agent(self.source, name="monitor.windows")(self._consume)
        self.app.agent(self.out, name="monitor.judge")(self._collect)
        self.app.timer(settings.tick_s, name="monitor.emit")(self._tick)
        self.app.on_partitions_assigned.connect(self._on_assigned)

    def _partition(self, partition: int) -> TumblingWindows:
        windows = self._windows.get(partition)
        if windows is None:
            s = self.settings
            windows = TumblingWindows(s.window_s, grace_s=s.grace_s, retention_s=s.retention_s)
            mark, deleted = f"{partition}|", set(self._deletes.get(partition, ()))
            deleted.add(_offset_key(partition))
            for key, saved in self.table.items():
                if str(key).startswith(mark) and key not in deleted:
                    windows.restore(Window.from_json(saved))
            self._windows[partition] = windows
            self._counted[partition] = CountedOffsets.from_json(
                self.table.get(_offset_key(partition), 0)
            )
        return windows

    async def _on_assigned(self, _sender: Any, /, *args: Any, **_: Any) -> None:
        """After every rebalance, rebuild each partition's windows from the table (recovered
        by then) on first use: a partition held before may have been another instance's in
        between (revoked and given back, or this member fenced out of the group for a while),
        and windows cached from before would overwrite what that instance counted. The label
        memory of a partition kept stays (it is not in the table); a lost one's goes."""
        assigned: AbstractSet[TP] = args[0]  # faust's signal: (app, assigned, signal=...)
        mine = {tp.partition for tp in assigned if tp.topic == self._audit}
        self._windows.clear()
        self._counted.clear()
        for gone in [p for p in self._joins if p not in mine]:
            del self._joins[gone]
        for gone in [p for p in self._deletes if p not in mine]:
            del self._deletes[gone]  # its new owner expires those windows itself

    def _join(self, partition: int) -> LabelJoin:
        join = self._joins.get(partition)
        if join is None:
            join = self._joins[partition] = LabelJoin(self.settings.label_memory)
        return join

    async def _consume(self, agent_stream: StreamT[Any]) -> None:
        s = self.settings
        stream = cast("Stream[Any]", agent_stream)  # what faust hands an agent
        async for events in stream.take_events(s.batch_size, within=s.batch_wait_s):
            last: dict[int, EventT[Any]] = {}
            for event in events:
                partition = event.message.partition
                if event.message.topic == self._labels:
                    self._label(partition, event.value)
                elif self._first_reading(partition, event.message.offset):
                    self._fold(partition, event.value)
                last[partition] = event
            for partition, event in last.items():
                # table writes go to the changelog partition of the current event
                stream._set_current_event(event)  # faust has no public setter
                self._save(partition)

    def _first_reading(self, partition: int, offset: int) -> bool:
        """Whether this audit record is read for the first time: faust may hand a record over
        again (a fetch after a rebalance, a redelivery after a restart whose counts reached the
        table), and the partition's counted offset, kept in the table with its windows, says
        which it already counted."""
        self._partition(partition)  # restores the counted offsets with the windows
        if self._counted[partition].first_reading(offset):
            return True
        self.metrics.replayed.inc()
        return False

    def _fold(self, partition: int, value: bytes) -> None:
        try:
            hop = parse_hop(value)
        except DecodeError:
            self.metrics.undecodable.inc()
            return
        if hop is None:
            return
        if self._partition(partition).add(hop):
            self.metrics.hops.inc()
            self._join(partition).remember(hop)
        else:
            self.metrics.late.inc()

    def _label(self, partition: int, value: bytes) -> None:
        try:
            label = parse_label(value, self.judging.keyring)
        except (DecodeError, UnauthenticatedError) as exc:
            self.metrics.labels.labels("refused").inc()
            log.warning("label refused", reason=str(exc))
            return
        verdicts = self._join(partition).verdicts(label)
        if not verdicts:
            self.metrics.labels.labels("unmatched").inc()
            return
        windows = self._partition(partition)
        counted = [windows.add_label(key, label.at, right) for key, right in verdicts]
        self.metrics.labels.labels("joined" if all(counted) else "late").inc()

    def _save(self, partition: int) -> None:
        for key in self._deletes.pop(partition, []):
            self.table.pop(key, None)
        for window in self._partition(partition).take_touched():
            self.table[_table_key(partition, window)] = window.to_json()
        self.table[_offset_key(partition)] = self._counted[partition].to_json()  # with them

    async def _collect(self, agent_stream: StreamT[Any]) -> None:
        """The judge's intake: every window partial, kept per (window, source) at its latest
        revision; assessments (this agent's own output) are passed over."""
        s = self.settings
        stream = cast("Stream[Any]", agent_stream)
        async for events in stream.take_events(s.batch_size, within=s.batch_wait_s):
            for event in events:
                stream._set_current_event(event)  # the table's changelog partition: 0
                self._keep_partial(event.value)
            if events:
                self._expire_partials()

    def _keep_partial(self, value: bytes) -> None:
        try:
            data = json.loads(value)
            if not isinstance(data, dict) or data.get("kind") != "window":
                return
            part = WindowSummary.from_json(data)
        except (ValueError, KeyError, TypeError):
            return  # the summaries are the monitor's own: anything else is no business of it
        ((source, revision),) = part.sources.items()
        key = summary_key_of(part.key, part.start, source)
        held = self.partials.get(key)
        if held is not None and int(held["revision"]) > revision:
            return
        self.partials[key] = data
        span = (part.key.pipeline, part.key.stage, part.start)
        self._index().setdefault(span, set()).add(key)
        self._dirty[span] = time.monotonic()

    def _index(self) -> dict[Span, set[str]]:
        """Partial keys per span, built from the table the first time (after its recovery)."""
        if self._spans is None:
            self._spans = {}
            for key, data in self.partials.items():
                span = (str(data["pipeline"]), str(data["stage"]), _start_of(data))
                self._spans.setdefault(span, set()).add(str(key))
                self._dirty.setdefault(span, 0.0)  # judged again: the last verdict may be lost
        return self._spans

    def _expire_partials(self) -> None:
        horizon = time.time() - self.settings.retention_s
        for span in [sp for sp in self._index() if sp[2] < horizon]:
            for key in self._index().pop(span):
                self.partials.pop(key, None)
            self._dirty.pop(span, None)

    async def _tick(self) -> None:
        if not self._settled():
            return  # a rebalance or a table recovery is under way: the table is not whole
        mine = self._assigned()
        for partition in list(self._windows):
            if partition not in mine:
                del self._windows[partition]  # revoked: its new owner restores it
                self._counted.pop(partition, None)
                self._joins.pop(partition, None)
        for partition in sorted(mine):
            if not self._settled():
                return  # a rebalance began while the last partition's windows were sent
            await self._emit(partition, self._partition(partition))  # restored ones too
        await self._judge()
        if mine and not self._ready:
            self._ready = True
            self._on_ready()

    def _settled(self) -> bool:
        """Whether the table is whole: windows may be restored from it. Not during a rebalance,
        nor while faust replays the changelog into it after one: it replays a partition kept
        from the offset of its last recovery, so until the replay ends the table holds older
        windows and counted offsets than the changelog's last, and windows restored then would
        count on from there while the stream goes on from the committed offset, losing the hops
        between. (``recovery.completed`` is set once, at the first recovery, and stays set.)"""
        tables = cast("TableManager", self.app.tables)  # what faust.App has
        return (
            tables.recovery.completed.is_set()
            and not self.app.rebalancing
            and not self.app.in_recovery
        )

    async def _emit(self, partition: int, windows: TumblingWindows) -> None:
        source = f"{self._audit}/{partition}"
        now = time.time()
        for window in windows.due():
            await self.out.send(
                key=summary_key(window, source), value=encode_summary(window, source, now),
                partition=0,
            )  # fmt: skip
            self.metrics.emitted.inc()
            self.metrics.observe(window, source)
        gone = windows.expire()
        if gone:
            self._deletes.setdefault(partition, []).extend(_table_key(partition, w) for w in gone)

    async def _judge(self) -> None:
        """Assess each span whose partials have settled; publish, export, guard."""
        if not self._judging_here():
            return
        quiet_since = time.monotonic() - self.settings.settle_s
        due = [span for span, last in self._dirty.items() if last <= quiet_since]
        judging = self.judging
        for span in sorted(due, key=lambda sp: sp[2]):
            del self._dirty[span]
            partials = [WindowSummary.from_json(self.partials[k])
                        for k in self._index().get(span, ()) if k in self.partials]  # fmt: skip
            for assessment in assess(combine(partials), judging.baselines(), judging.policy_of):
                body = json.dumps(assessment.to_json(), separators=(",", ":")).encode()
                key = f"assessment/{assessment.key.label()}/{int(assessment.start)}".encode()
                await self.out.send(key=key, value=body, partition=0)
                self.metrics.judged(assessment)
                if judging.guard is not None:
                    judging.guard.check(assessment)

    def _judging_here(self) -> bool:
        out = monitor_topic(self.settings.topic_prefix)
        return any(tp.topic == out for tp in self.app.consumer.assignment())

    def _assigned(self) -> set[int]:
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self._audit}


def summary_key_of(key: WindowKey, start: float, source: str) -> str:
    """The partials table's key of one (window, source)."""
    return f"{key.label()}/{int(start)}/{source}"


def _start_of(data: Mapping[str, Any]) -> float:
    return WindowSummary.from_json(dict(data)).start
