"""Exactly-once: a worker's records and its consumed offsets committed in one Kafka transaction.

In exactly-once mode (``LoopOptions.exactly_once``) the worker loop keeps one transaction of its
producer open at all times. Every ``commit_interval_s`` it commits it, holding every record
produced since the last one and the consumed offsets that became committable
(``send_offsets_to_transaction`` with the consumer's group metadata), and opens the next. A
crash aborts the open transaction: its records are never seen by ``read_committed`` consumers
and its offsets were never committed, so a restart redoes exactly what it held.

Fencing. A transaction's offsets are checked against the consumer group's generation (KIP-447),
so a zombie (a member the group has moved on from) cannot commit. Its transactional id
(``transactional_id``) is stable for an instance: a restarted process fences and aborts the
transaction its predecessor left open at once, instead of ``read_committed`` readers waiting
``transaction.timeout.ms`` for the broker to abort it. The default id is the group, the host,
the state directory (a short digest of its path) and the lowest slot number no other live
process of that group holds there (a lock file in it): a process SIGKILLed and restarted on its
host with its state directory takes its old id back, and two workers never share one (which
would fence each other in turn).

A transaction that fails but may be aborted (a record that timed out while a broker died, a
consumer-group generation that moved on under it) is aborted, and the worker rewinds: it drops
what it held in flight and reads again from the last committed offsets, as if its partitions
had been revoked and assigned back (``WorkerLoop._rewind``). Any other failure (fenced, fatal)
stops the worker after aborting what it can: nothing of it is visible, and a restart redoes it.
Retriable errors of a commit step are retried first.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, TopicPartition

__all__ = [
    "IdSlot",
    "TransactionSlot",
    "TransactionalProducer",
    "Transactions",
    "requires_abort",
    "transactional_config",
    "transactional_id_slot",
]

log = structlog.get_logger(__name__)

# How long a transaction left open by a crash blocks readers when no successor takes its id
# back (one that does aborts it at once). It also bounds how long a record is retried
# (librdkafka caps message.timeout.ms at it), so it must outlast a leader moving to another
# broker after one dies: about the brokers' 9 s session timeout plus an election; at 10 s, a
# killed broker failed transactions. Kafka's own default.
TRANSACTION_TIMEOUT_MS = 60_000
_MAX_SLOTS = 1024
_TRIES = 3  # a retriable error of a commit step is retried this often before the worker stops


class TransactionalProducer(Protocol):
    """The transactional part of ``confluent_kafka.Producer``."""

    def init_transactions(self, timeout: float = ...) -> None: ...
    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = ...
    ) -> None: ...
    def commit_transaction(self, timeout: float = ...) -> None: ...
    def abort_transaction(self, timeout: float = ...) -> None: ...


def transactional_config(transactional_id: str) -> dict[str, Any]:
    """The producer settings of an exactly-once worker."""
    return {"transactional.id": transactional_id, "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS}


class IdSlot(Protocol):
    """A worker's transactional id, held until ``release``."""

    transactional_id: str

    def release(self) -> None: ...


def transactional_id_slot(group: str, given: str | None, state_dir: Path | None) -> IdSlot:
    """The id ``given``; else a slot in ``state_dir``; else (no place to hold a slot) an id of
    this process alone."""
    if given is not None:
        return _GivenId(given)
    if state_dir is None:
        return _GivenId(f"{group}.{uuid.uuid4().hex[:12]}")
    return TransactionSlot(group, state_dir)


class _GivenId:
    """An id given or made for this process: nothing to hold or release."""

    def __init__(self, transactional_id: str) -> None:
        self.transactional_id = transactional_id

    def release(self) -> None: ...


class TransactionSlot:
    """This process's transactional id for ``group``: ``<group>.<host>.<dir>.<slot>``, ``dir`` a
    digest of ``state_dir``'s path, the slot held by a lock file under it until ``release`` (or
    the process's death)."""

    def __init__(self, group: str, state_dir: Path) -> None:
        self._file: IO[bytes] | None = None
        folder = state_dir / "transactions"
        folder.mkdir(parents=True, exist_ok=True)
        where = f"{_safe(socket.gethostname())}.{_digest(folder)}"
        for slot in range(_MAX_SLOTS):
            if self._lock(folder / f"{_safe(group)}.{slot}.lock"):
                self.transactional_id = f"{group}.{where}.{slot}"
                return
        raise RuntimeError(f"more than {_MAX_SLOTS} workers of group {group!r} on this host")

    def _lock(self, path: Path) -> bool:
        handle = path.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        os.set_inheritable(handle.fileno(), False)
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _digest(folder: Path) -> str:
    return hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]


class Transactions:
    """The open transaction of an exactly-once worker's producer."""

    def __init__(self, producer: TransactionalProducer, timeout_s: float = 30.0) -> None:
        self._producer, self._timeout_s = producer, timeout_s
        self._open = False

    def start(self) -> None:
        """Fence this id's predecessor (aborting what it left open), open the first transaction."""
        self._producer.init_transactions(self._timeout_s)
        self._begin()

    def commit(self, offsets: list[tuple[str, int, int]], group_metadata: Any) -> None:
        """Commit what was produced since the last commit with ``offsets`` (the next offset to
        read of each partition), then open the next transaction; raises when it cannot."""
        try:
            if offsets:
                tps = [TopicPartition(t, p, o) for t, p, o in offsets]
                producer, timeout_s = self._producer, self._timeout_s
                _retrying(
                    "adding offsets to the transaction",
                    lambda: producer.send_offsets_to_transaction(tps, group_metadata, timeout_s),
                )
            _retrying(
                "committing the transaction",
                lambda: self._producer.commit_transaction(self._timeout_s),
            )
            self._open = False
        except KafkaException:
            self.abort()
            raise
        self._begin()

    def restart(self) -> None:
        """Open the next transaction after one was aborted (``commit`` raised an error that
        only aborts it: ``requires_abort``)."""
        self.abort()
        self._begin()

    def abort(self) -> None:
        """Abort the open transaction, if any, so readers need not wait for its timeout."""
        if not self._open:
            return
        self._open = False
        try:
            self._producer.abort_transaction(self._timeout_s)
        except KafkaException as exc:  # fenced or fatal: the broker aborts it itself
            log.warning("could not abort the transaction", error=str(exc))

    def _begin(self) -> None:
        self._producer.begin_transaction()
        self._open = True


def requires_abort(exc: KafkaException) -> bool:
    """Whether the transaction failed but the producer goes on once it is aborted (a record
    that timed out, a group generation that moved on): the worker rewinds and redoes it. Any
    other error (fenced, fatal) stops the worker."""
    error: KafkaError = exc.args[0]
    return bool(error.txn_requires_abort()) and not error.fatal()


def _retrying(what: str, step: Callable[[], None]) -> None:
    """Run a step of a commit, again while it fails with an error librdkafka calls retriable
    (e.g. CONCURRENT_TRANSACTIONS while a coordinator moves, a timeout), ``_TRIES`` times in all."""
    for tries_left in range(_TRIES - 1, -1, -1):
        try:
            step()
            return
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if not error.retriable() or tries_left == 0:
                raise
            log.warning(f"{what} failed; retrying", error=str(error))
