"""Whether a consumer can still fetch, for readiness probes and metrics.

A fetch response larger than librdkafka's receive buffer never reaches the application: the
client drops the connection, logs "Invalid response size" and fetches the same data again, for
ever. The error reaches only ``error_cb``. This turns it into a readiness signal and a count, so
an operator sees a stuck consumer instead of a quiet one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from confluent_kafka import KafkaError

__all__ = ["FetchHealth"]

log = structlog.get_logger(__name__)


class FetchHealth:
    """``error_cb`` for a consumer; ``ok`` is False while receive failures keep coming."""

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s, self._clock = window_s, clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self.failures = 0  # receive failures since start (a metric reads it)

    def on_error(self, error: KafkaError) -> None:
        if not is_receive_failure(error):
            return
        with self._lock:
            now = self._clock()
            quiet = self._last is None or now - self._last > self._window_s
            self._last = now
            self.failures += 1
        if quiet:  # once per episode: librdkafka retries several times a second
            log.error(
                "consumer cannot receive a fetch response; not ready until it can",
                error=error.str(),
            )

    @property
    def ok(self) -> bool:
        with self._lock:
            return self._last is None or self._clock() - self._last > self._window_s


def is_receive_failure(error: KafkaError) -> bool:
    """A response the client could not take in (over ``receive.message.max.bytes``)."""
    return error.code() == KafkaError._BAD_MSG and "receive.message.max.bytes" in error.str()
