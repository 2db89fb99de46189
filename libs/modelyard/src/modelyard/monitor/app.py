"""The faust-streaming adapter: the only module that imports faust.

One agent reads the audit topic in batches (``take_events``), folds each hop into its source
partition's :class:`TumblingWindows` and mirrors the windows a batch changed into a table backed
by a changelog topic (one write per changed window per batch, not per hop). The changelog
partition of a window is its source partition, so the instance that takes a partition over (a
restart, a rebalance) restores that partition's windows with it. A timer publishes the windows
that closed to ``<prefix>.monitor`` and forgets those past retention.

At-least-once: offsets are committed by faust after the batch is processed; a monitor killed
between its changelog writes and its next offset commit reads those records again and counts
them twice, so a window can over-count by at most the hops of that partition since its last
commit (faust commits every ``broker_commit_interval``, 2.8 s by default).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import faust
import structlog
from faust.streams import Stream
from faust.tables.manager import TableManager
from faust.types import EventT, StreamT

from modelyard.errors import DecodeError
from modelyard.monitor.hops import parse_hop
from modelyard.monitor.metrics import MonitorMetrics
from modelyard.monitor.settings import MonitorSettings, monitor_group, monitor_topic
from modelyard.monitor.summary import encode_summary, summary_key
from modelyard.monitor.windows import TumblingWindows, Window
from modelyard.topics import audit_topic

__all__ = ["MonitorApp"]

log = structlog.get_logger(__name__)


def _table_key(partition: int, window: Window) -> str:
    return f"{partition}|{window.key.label()}|{int(window.start)}"


class MonitorApp:
    """The faust app and its one agent, table and timer."""

    def __init__(
        self,
        settings: MonitorSettings,
        partitions: int,
        metrics: MonitorMetrics,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings, self.metrics, self._on_ready = settings, metrics, on_ready
        prefix = settings.topic_prefix
        self.app = faust.App(
            monitor_group(prefix), broker=f"kafka://{settings.bootstrap}", store="memory://",
            web_enabled=False, datadir=str(settings.state_dir / "monitor"),
            topic_partitions=partitions, topic_replication_factor=1,
            consumer_auto_offset_reset="earliest", producer_acks=-1,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=settings.session_timeout_s / 4,
            broker_rebalance_timeout=settings.session_timeout_s,
        )  # fmt: skip
        self._audit = audit_topic(prefix)
        self.source = self.app.topic(self._audit, key_serializer="raw", value_serializer="raw")
        self.out = self.app.topic(
            monitor_topic(prefix), key_serializer="raw", value_serializer="raw"
        )
        self.table = self.app.Table("windows", partitions=partitions, key_type=str)
        self._windows: dict[int, TumblingWindows] = {}
        self._deletes: dict[int, list[str]] = {}
        self._ready = False
        self.app.agent(self.source, name="monitor.windows")(self._consume)
        self.app.timer(settings.tick_s, name="monitor.emit")(self._tick)

    def _partition(self, partition: int) -> TumblingWindows:
        windows = self._windows.get(partition)
        if windows is None:
            s = self.settings
            windows = TumblingWindows(s.window_s, grace_s=s.grace_s, retention_s=s.retention_s)
            mark = f"{partition}|"
            for key, saved in self.table.items():
                if str(key).startswith(mark):
                    windows.restore(Window.from_json(saved))
            self._windows[partition] = windows
        return windows

    async def _consume(self, agent_stream: StreamT[Any]) -> None:
        s = self.settings
        stream = cast("Stream[Any]", agent_stream)  # what faust hands an agent
        async for events in stream.take_events(s.batch_size, within=s.batch_wait_s):
            last: dict[int, EventT[Any]] = {}
            for event in events:
                partition = event.message.partition
                self._fold(self._partition(partition), event.value)
                last[partition] = event
            for partition, event in last.items():
                # table writes go to the changelog partition of the current event
                stream._set_current_event(event)  # faust has no public setter
                self._save(partition)

    def _fold(self, windows: TumblingWindows, value: bytes) -> None:
        try:
            hop = parse_hop(value)
        except DecodeError:
            self.metrics.undecodable.inc()
            return
        if hop is None:
            return
        if windows.add(hop):
            self.metrics.hops.inc()
        else:
            self.metrics.late.inc()

    def _save(self, partition: int) -> None:
        for key in self._deletes.pop(partition, []):
            self.table.pop(key, None)
        for window in self._windows[partition].take_touched():
            self.table[_table_key(partition, window)] = window.to_json()

    async def _tick(self) -> None:
        if not self._settled():
            return  # a rebalance or a table recovery is under way: the table is not whole
        mine = self._assigned()
        for partition in list(self._windows):
            if partition not in mine:
                del self._windows[partition]  # revoked: its new owner restores it
        for partition in sorted(mine):
            await self._emit(partition, self._partition(partition))  # restored ones too
        if mine and not self._ready:
            self._ready = True
            self._on_ready()

    def _settled(self) -> bool:
        tables = cast("TableManager", self.app.tables)  # what faust.App has
        return tables.recovery.completed.is_set() and not self.app.rebalancing

    async def _emit(self, partition: int, windows: TumblingWindows) -> None:
        source = f"{self._audit}/{partition}"
        now = time.time()
        for window in windows.due():
            await self.out.send(
                key=summary_key(window, source), value=encode_summary(window, source, now)
            )
            self.metrics.emitted.inc()
            self.metrics.observe(window, source)
        gone = windows.expire()
        if gone:
            self._deletes.setdefault(partition, []).extend(_table_key(partition, w) for w in gone)

    def _assigned(self) -> set[int]:
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self._audit}
