"""Requests in flight, by request id: where replies meet the callers waiting for them.

The transport-neutral half of the gateway. A unary caller waits on a future for the final
result; a streaming caller reads a queue of every event up to and including the result.
Replies for ids nobody waits for (late, duplicated, or another gateway's) are dropped. Every
method runs on the event loop that owns the futures; transports hand replies over with
``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Final

import structlog

from modelyard.errors import ValidationError
from modelyard.wire import Envelope

__all__ = ["RESULT", "STAGE", "Event", "EventQueue", "Pending"]

STAGE: Final = "stage"  # one stage's reply (only when the request asked for progress)
RESULT: Final = "result"  # the pipeline's final result: always the last event of a request
Event = tuple[str, Envelope]  # (STAGE or RESULT, envelope)
EventQueue = asyncio.Queue[Event | BaseException]

log = structlog.get_logger(__name__)


class Pending:
    """Futures (unary) and queues (streams) of the requests in flight, by request id."""

    def __init__(self) -> None:
        self._results: dict[str, asyncio.Future[Envelope]] = {}
        self._streams: dict[str, EventQueue] = {}

    def __len__(self) -> int:
        return len(self._results) + len(self._streams)

    def expect_result(self, request_id: str) -> asyncio.Future[Envelope]:
        """A future for the final result of ``request_id``; stage events are not wanted."""
        self._refuse_duplicate(request_id)
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._results[request_id] = future
        return future

    def expect_events(self, request_id: str) -> EventQueue:
        """A queue receiving every event of ``request_id`` (or the error that ends it)."""
        self._refuse_duplicate(request_id)
        queue: EventQueue = asyncio.Queue()
        self._streams[request_id] = queue
        return queue

    def forget(self, request_id: str) -> None:
        """Stop waiting for ``request_id``: what still arrives for it is dropped."""
        self._results.pop(request_id, None)
        self._streams.pop(request_id, None)

    def deliver(self, events: Iterable[Event]) -> None:
        """Hand each event to whoever waits for its request id; drop the rest."""
        for kind, envelope in events:
            rid = envelope.request_id
            if (queue := self._streams.get(rid)) is not None:
                queue.put_nowait((kind, envelope))
            elif kind == RESULT and (future := self._results.get(rid)) is not None:
                if not future.done():
                    future.set_result(envelope)
            elif kind == RESULT:
                log.debug("gateway_reply_dropped", request_id=rid, reason="nobody waits for it")

    def fail(self, request_id: str, error: BaseException) -> None:
        """End the wait of ``request_id`` with ``error`` (e.g. its request was not delivered)."""
        if (queue := self._streams.get(request_id)) is not None:
            queue.put_nowait(error)
        elif (future := self._results.get(request_id)) is not None and not future.done():
            future.set_exception(error)

    def fail_all(self, error: BaseException) -> None:
        """End every wait with ``error`` (the gateway is closing or its transport failed)."""
        for request_id in [*self._results, *self._streams]:
            self.fail(request_id, error)

    def _refuse_duplicate(self, request_id: str) -> None:
        if request_id in self._results or request_id in self._streams:
            raise ValidationError(f"request id {request_id!r} is already in flight")
