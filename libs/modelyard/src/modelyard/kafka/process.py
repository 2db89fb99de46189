"""How a worker process is wired: its settings, SIGTERM/SIGINT → stop, the wait, the ready line.

Every Kafka service runs the same way: parse one settings model (extending ``WorkerSettings``)
at start, start its workers, print one machine-readable ready line (``modelyard up`` and the
tests wait for it), wait for a signal or for a worker to end, then stop the workers (each
drains and commits) and exit 1 when any of them failed.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, Protocol

import structlog
from pydantic import Field

from modelyard.kafka.settings import KafkaClientSettings
from modelyard.kafka.worker import LoopOptions

__all__ = [
    "Watched",
    "WorkerSettings",
    "announce_ready",
    "block_until_stopped",
    "exit_code",
    "install_stop_signals",
    "stop_on_signals",
    "wait_for_stop",
    "wait_ready",
]

log = structlog.get_logger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_CHECK_S = 0.5  # how often a waiting process looks at its workers


class WorkerSettings(KafkaClientSettings):
    """The worker loop's settings; each Kafka service's settings model extends it."""

    poll_batch_size: int = Field(
        default=500, ge=1, description="Most messages taken from the consumer in one step."
    )
    max_inflight: int = Field(
        default=1024, ge=1, description="Unanswered messages before intake pauses."
    )
    drain_timeout_s: float = Field(default=30, ge=0, description="Longest SIGTERM drain.")
    commit_interval_s: float = Field(
        default=0.2, gt=0, description="How often finished offsets are committed."
    )
    revoke_grace_s: float = Field(
        default=0.0,
        ge=0,
        description="How long a revoked partition's unanswered messages may still finish "
        "before it is given up (0: at once; the new owner redoes them).",
    )
    poll_timeout_s: float = Field(
        default=0.05, gt=0, description="How long an idle worker waits for a message."
    )

    def loop_options(self, **overrides: Any) -> LoopOptions:
        """The loop's options from these settings; ``overrides`` win (a role's own bounds)."""
        values: dict[str, Any] = {
            "bootstrap": self.bootstrap, "kafka": self.kafka_extra(),
            "state_dir": self.state_dir, "poll_batch_size": self.poll_batch_size,
            "max_inflight": self.max_inflight, "drain_timeout_s": self.drain_timeout_s,
            "commit_interval_s": self.commit_interval_s, "revoke_grace_s": self.revoke_grace_s,
            "poll_timeout_s": self.poll_timeout_s,
        }  # fmt: skip
        values.update(overrides)
        return LoopOptions(**values)


class Watched(Protocol):
    """A worker the process lives for (a ``WorkerLoop``)."""

    @property
    def failure(self) -> BaseException | None: ...

    @property
    def running(self) -> bool: ...


class _Readiable(Protocol):
    def wait_ready(self, timeout_s: float) -> bool: ...


# signals -----------------------------------------------------------------------------------
def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (in a running event loop; early, so a signal during
    start-up is not lost). Off the main thread (tests) nothing is installed."""
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def stop_on_signals() -> threading.Event:
    """The same for a process without an event loop (call it on the main thread)."""
    stop = threading.Event()
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop.set())
    return stop


# waiting -----------------------------------------------------------------------------------
async def wait_ready(workers: Sequence[_Readiable], timeout_s: float = 60.0) -> bool:
    """Wait until every worker has its first assignment; a warning (not an error) if not."""
    waits = [asyncio.to_thread(w.wait_ready, timeout_s) for w in workers]
    ready = all(await asyncio.gather(*waits))
    if not ready:
        log.warning("a worker is not ready yet; announcing anyway")
    return ready


async def wait_for_stop(stop: asyncio.Event, workers: Sequence[Watched]) -> bool:
    """Wait for ``stop``; True when a worker ended (failed) first instead."""
    while not stop.is_set():
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _CHECK_S)
        if _ended(workers):
            return True
    return False


def block_until_stopped(stop: threading.Event, workers: Sequence[Watched]) -> bool:
    """``wait_for_stop`` for a process without an event loop."""
    while not stop.wait(_CHECK_S):
        if _ended(workers):
            return True
    return False


def _ended(workers: Sequence[Watched]) -> bool:
    for worker in workers:
        if worker.failure is not None or not worker.running:
            failure = worker.failure
            if failure is not None:
                log.error("stopping", reason="worker failure", error=str(failure))
            else:
                log.info("stopping", reason="worker ended")
            return True
    return False


def exit_code(workers: Sequence[Watched]) -> int:
    """The process's exit code once its workers are stopped: 1 when any failed."""
    return 1 if any(w.failure is not None for w in workers) else 0


# the ready line ----------------------------------------------------------------------------
def announce_ready(role: str, **fields: object) -> None:
    """``modelyard <role> ready k=v ...`` on stdout (values without spaces), and a log line."""
    pairs = " ".join(f"{name}={value}" for name, value in fields.items())
    # one write, newline included: print() writes the end separately, and a log line from
    # another thread could land in between when stdout and stderr share a pipe
    sys.stdout.write(f"modelyard {role} ready {pairs}\n")
    sys.stdout.flush()
    log.info(f"{role} ready", **fields)
