"""The worker loop on the real broker: a failure commits nothing from the failed message on, and
a worker killed mid-stream loses nothing (its successor in the group sees every message).

Run as a module, this file is the worker process the kill tests start (see ``main``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from modelyard.broker import create_topics
from modelyard.kafka.handler import OutRecord, SyncHandler
from modelyard.kafka.process import (
    announce_ready,
    block_until_stopped,
    exit_code,
    stop_on_signals,
)
from modelyard.kafka.worker import GroupIntake, LoopOptions, WorkerLoop

from tests.support.kafka_io import Collector, produce_all

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
READY = "modelyard copier ready"


class Copier(SyncHandler):
    """Copies each message to ``out`` under its key. ``boom`` raises (a bug, not a refusal);
    the value ``hang_at`` blocks for ever (a worker stuck mid-stream, for the kill tests)."""

    def __init__(self, outbox: Any, out: str, hang_at: int = -1) -> None:
        super().__init__(outbox)
        self.out, self.hang_at = out, hang_at
        self.seen: list[tuple[int, int]] = []  # (partition, offset)

    def records_for(self, message: Any) -> list[OutRecord]:
        self.seen.append((message.partition(), message.offset()))
        value = message.value()
        if value == b"boom":
            raise RuntimeError("the copier broke")
        if value == str(self.hang_at).encode():
            threading.Event().wait()  # until the process is killed
        return [OutRecord(self.out, value, message.key())]


class CommitWatch:
    """Loop hooks that tell when an offset of partition 0 has been committed."""

    def __init__(self, offset: int) -> None:
        self.offset, self.reached = offset, threading.Event()

    def committed(self, offsets: Sequence[tuple[str, int, int]]) -> None:
        if any(p == 0 and o >= self.offset for _, p, o in offsets):
            self.reached.set()

    def paused(self, paused: bool) -> None: ...

    def lag(self, topic: str, partition: int, lag: int) -> None: ...

    def send_failed(self, topic: str, error: BaseException) -> None: ...


def copier(
    bootstrap: str, topic: str, group: str, state_dir: Path | None, hooks: Any = None
) -> WorkerLoop:
    options = LoopOptions(bootstrap=bootstrap, state_dir=state_dir, drain_timeout_s=10)
    intake = GroupIntake(topics=(topic,), group_id=group)
    return WorkerLoop(intake, options, hooks=hooks, name="copier")


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return [tp.offset for tp in consumer.committed(tps, timeout=30)]
    finally:
        consumer.close()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        threading.Event().wait(0.02)  # re-check soon; nothing to be woken by


def records(start: int, stop: int) -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    return [(f"m{i}", str(i).encode(), []) for i in range(start, stop)]


# a failure ---------------------------------------------------------------------------------
def test_a_worker_that_fails_on_message_k_leaves_k_to_the_next(broker: str, unique: str) -> None:
    k, topic, out, group = 30, f"{unique}.in", f"{unique}.out", f"{unique}.g"
    create_topics(broker, [topic, out])
    produce_all(broker, topic, records(0, k))
    watch = CommitWatch(k)
    first = copier(broker, topic, group, None, hooks=watch)
    first.start(Copier(first.outbox, out))
    try:
        assert watch.reached.wait(60), "the first k messages were never committed"
        produce_all(broker, topic, [(f"m{k}", b"boom", []), *records(k + 1, k + 10)])
        assert first.join(60)
    finally:
        first.stop()
    assert isinstance(first.failure, RuntimeError)
    assert committed(broker, group, topic, 1) == [k]  # nothing from the failed message on

    second = copier(broker, topic, group, None)
    handler = Copier(second.outbox, out)
    second.start(handler)
    try:
        wait_for(lambda: (0, k + 9) in handler.seen or second.failure is not None, 60, "rest")
    finally:
        second.stop()
    assert handler.seen[0] == (0, k)  # the next owner starts at the failed message


# a kill ------------------------------------------------------------------------------------
class CopierProcess:
    """This module's ``main`` in a child process, its output drained by a thread."""

    def __init__(self, *args: object) -> None:
        cmd = [sys.executable, "-m", "tests.integration.test_worker_loop_broker", *map(str, args)]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="copier-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def wait_ready(self) -> None:
        try:
            wait_for(self._ready_or_gone, 60, "the copier's ready line")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; its output:\n" + "\n".join(self.lines[-30:])) from None
        assert self.proc.poll() is None, "\n".join(self.lines[-30:])

    def _ready_or_gone(self) -> bool:
        # in the line, not at its start: the child's log lines (stdout, unconfigured structlog) and
        # the ready line come from two threads and may share a line
        return any(READY in x for x in self.lines) or self.proc.poll() is not None

    def end(self, sig: int) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def test_a_worker_killed_mid_stream_loses_nothing(broker: str, unique: str, tmp_path: Path) -> None:
    total, hang_at = 2000, 1500
    topic, out, group = f"{unique}.in", f"{unique}.out", f"{unique}.g"
    create_topics(broker, [topic], partitions=2)
    create_topics(broker, [out])
    produce_all(broker, topic, records(0, total))
    copies = Collector(broker, out)
    child = CopierProcess(broker, topic, out, group, tmp_path, hang_at)
    try:
        child.wait_ready()
        copies.until(lambda m: len(m) >= 300)  # streaming (it blocks at hang_at at the latest)
    finally:
        assert child.end(signal.SIGKILL) == -signal.SIGKILL
    before = {m.key() for m in copies.messages}

    restart = copier(broker, topic, group, tmp_path)  # its claims say: the last one died
    restart.start(Copier(restart.outbox, out))
    try:
        wanted = {f"m{i}".encode() for i in range(total)}
        copies.until(lambda m: wanted <= {x.key() for x in m} or restart.failure is not None, 120)
    finally:
        restart.stop()
        copies.close()
    assert restart.failure is None
    assert len(before) < total  # it really died mid-stream
    assert {m.key() for m in copies.messages} == wanted


def test_sigterm_drains_commits_and_exits_zero(broker: str, unique: str, tmp_path: Path) -> None:
    total, topic, out, group = 200, f"{unique}.in", f"{unique}.out", f"{unique}.g"
    create_topics(broker, [topic, out])
    produce_all(broker, topic, records(0, total))
    copies = Collector(broker, out)
    child = CopierProcess(broker, topic, out, group, tmp_path, -1)
    try:
        child.wait_ready()
        copies.until(lambda m: len(m) >= total)
    finally:
        code = child.end(signal.SIGTERM)
        copies.close()
    assert code == 0, "\n".join(child.lines[-30:])
    assert committed(broker, group, topic, 1) == [total]
    assert not list((tmp_path / "poison").rglob("*.json"))  # claims released: a clean stop


# the child process -------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    """A copier worker process: ready line, SIGTERM drains, exit code 1 on failure."""
    bootstrap, topic, out, group, state_dir, hang_at = argv
    stop = stop_on_signals()
    loop = copier(bootstrap, topic, group, Path(state_dir))
    loop.start(Copier(loop.outbox, out, int(hang_at)))
    if not loop.wait_ready(60):
        return 1  # never assigned: the test prints this process's log
    announce_ready("copier", topic=topic, group=group)
    block_until_stopped(stop, [loop])
    loop.stop()
    return exit_code([loop])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
