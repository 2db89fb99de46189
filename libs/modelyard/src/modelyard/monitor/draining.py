"""faust's Kafka consumer, handing each fetched batch to the agents under one wait.

faust's fetcher wraps every message in ``Service.wait_first(callback(message),
suspend_flow.wait())``: four tasks created and three cancelled per message, so that a rebalance
(which suspends the flow) interrupts a callback blocked on a full stream buffer. Profiled under
the monitor's load, that wrapper alone took about a third of the process's busy time.

``BatchDrainingConsumer`` keeps the interruption but pays for it once per fetched batch: the
batch's messages are taken from ``getmany`` (which already stops at a suspended flow or a new
consumer generation), then delivered one after another inside a single ``wait_first``. If the
flow is suspended meanwhile, the rest of the batch is dropped, as faust drops what arrives
while suspended; the partitions are then sought back to their committed offsets, so nothing is
lost. Everything else (gap tracking for acks, commit every N acks, read offsets) is as faust
does it, message by message.

Installed by ``use_batch_draining(app)`` before the app starts (``monitor/app.py``); tied to the
faust-streaming version the lock pins (``tests/integration/test_monitor_faults.py`` rebalances
and kills it).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, Message

__all__ = ["BatchDrainingConsumer", "use_batch_draining"]

_YIELD_EVERY = 100  # messages between yields to the event loop, as faust does


class BatchDrainingConsumer(AIOKafkaConsumer):
    async def _drain_messages(self, fetcher: Any) -> None:  # faust's fetcher thread body
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (self._stopped.is_set() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                batch = [pair async for pair in self.getmany(timeout=1.0)]
                await self.sleep(0)  # getmany may return at once, again and again
                if batch and not self.should_stop:
                    await self.wait_first(self._deliver(batch), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, batch: list[tuple[TP, Message]]) -> None:
        """Each message to the agents, in order, with faust's per-message bookkeeping."""
        acks_enabled_for, read_offset = self.app.topics.acks_enabled_for, self._read_offset
        for n, (tp, message) in enumerate(batch, 1):
            if n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            offset, last = message.offset, read_offset[tp]
            if last is not None and offset < last:
                continue  # delivered before (faust drops these too)
            if last and offset - last > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, last + 1, offset)  # a hole (e.g. compacted) to ack
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await self.callback(message)
            read_offset[tp] = offset


def use_batch_draining(app: faust.App) -> None:
    """Make ``app``'s consumer a ``BatchDrainingConsumer`` (before the app starts)."""
    transport = cast(Any, app.transport)
    transport.Consumer = BatchDrainingConsumer
