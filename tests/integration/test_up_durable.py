"""``modelyard up`` started again keeps what it accepted: the routing state (control history,
releases, guards) and the requests accepted but not answered; a journal it cannot read stops it.

Every test runs real ``modelyard up`` processes (real routers and workers, small test models)
on their own broker, the embedded one unless a test says ``--engine kafka``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from modelyard.topics import pipeline_ingress_topic, pipeline_results_topic
from modelyard.wire import Envelope
from modelyard.wire.envelope import decode_envelope, encode_envelope

from tests.support.models import SHOUTY_SPEC, shouty_layout
from tests.support.stage import ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.own_brokers,
]

PARTITIONS = 2
SPEC = SHOUTY_SPEC
# up stops its children in three groups, each allowed MODELYARD_UP_STOP_TIMEOUT_S (set below)
# before a kill, then the journal and the broker (~15 s at most): the wait covers all of it
_CHILD_STOP_S = 25
_STOP_S = 3 * _CHILD_STOP_S + 45
ENGINES = ["embedded", "kafka"]  # kafka: the jars `make setup` fetched (else a clear error)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(repository with shout:1 and shout:2, pipeline spec)."""
    return shouty_layout(tmp_path_factory.mktemp("durable"))


class Up:
    """One ``modelyard up`` process; its stderr goes to a file for failure reports."""

    def __init__(self, layout: tuple[Path, Path], state: Path, log: Path, *extra: str) -> None:
        repo, spec = layout
        argv = [sys.executable, "-m", "modelyard.cli.main", "up", "--port", "0",
                "--router-port", "0", "--pipeline", str(spec), "--repository", str(repo),
                "--partitions", str(PARTITIONS), "--state-dir", str(state), *extra]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "MODELYARD_UP_STOP_TIMEOUT_S": str(_CHILD_STOP_S)}  # fmt: skip
        self.log = log
        with log.open("a") as err:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                         stderr=err, text=True)  # fmt: skip
        self.summary: list[str] = []

    def ready(self) -> str:
        """Wait for the ready line; the summary after it is kept. The bootstrap address."""
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()  # blocks until up is ready (or exits: empty line)
        assert first.startswith("modelyard up ready"), self.tail()
        while not (line := self.proc.stdout.readline()).startswith("  Ctrl-C"):
            assert line, self.tail()
            self.summary.append(line.rstrip())
        return first.split()[3].removeprefix("bootstrap=")

    def line(self, start: str) -> str:
        """The summary line that starts with ``start``, its spaces collapsed."""
        lines = (" ".join(line.split()) for line in self.summary)
        return next(line for line in lines if line.startswith(start))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(_STOP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"up did not stop within {_STOP_S} s of SIGTERM\n{self._stacks()}")

    def _stacks(self) -> str:
        """What up and every ``modelyard`` command under it are doing: SIGUSR1 makes each print
        its threads' stacks into up's log (``cli/main.py``; any other process it would kill)."""
        pids = [self.proc.pid, *_descendants(self.proc.pid)]
        alive = [(pid, _cmdline(pid)) for pid in pids]
        before, dumps = self.log.stat().st_size, 0
        for pid, cmd in alive:
            if "modelyard.cli.main" in cmd:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)
                    dumps += " monitor " not in cmd  # faust's monitor logs its tasks instead

        def dumped() -> bool:
            with self.log.open("rb") as log:
                log.seek(before)
                return log.read().count(b"Current thread") >= dumps

        with contextlib.suppress(AssertionError):  # one that cannot print leaves the others'
            _wait_for(dumped, "the stacks", timeout_s=10)
        still = "\n".join(f"  {pid}: {cmd}" for pid, cmd in alive)
        return f"still running:\n{still}\n{self.log.read_text()[-30000:]}"

    def kill_all(self) -> None:
        """SIGKILL up and everything it started (broker, workers, router), all at once."""
        pids = [self.proc.pid, *_descendants(self.proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(30)
        for pid in pids[1:]:  # orphans are reaped by init: wait until each is gone
            _wait_for(lambda p=pid: not Path(f"/proc/{p}").exists() or _zombie(p), "pid gone")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill_all()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def tail(self) -> str:
        return self.log.read_text()[-4000:]


@pytest.fixture
def ups() -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.close()


def _cli(bootstrap: str, state: Path, *args: str) -> str:
    """The control CLI as an operator of that up runs it: with up's keyring and admin key."""
    argv = [sys.executable, "-m", "modelyard.cli.main", *args, "--bootstrap", bootstrap]
    keys = {"MODELYARD_KEYRING": str(state / "keyring.yaml"),
            "MODELYARD_OPERATOR_KEY": str(state / "keys" / "admin.key")}  # fmt: skip
    done = subprocess.run(argv, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **keys})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _change(bootstrap: str, state: Path, *args: str, repo: Path, spec: Path) -> None:
    _cli(bootstrap, state, *args, "--repository", str(repo), "--pipelines", str(spec.parent),
         "--reason", "test")  # fmt: skip


def _routing_view(bootstrap: str, state: Path, spec: Path) -> tuple[Any, str]:
    status = json.loads(_cli(bootstrap, state, "status", "shouty", "--json", "--pipelines",
                             str(spec.parent)))  # fmt: skip
    return status, _cli(bootstrap, state, "history", "shouty")


def _send(bootstrap: str, ids: list[str]) -> None:
    """Requests ``ids``; the i-th from caller ``c<i>`` (canary draws are sticky per caller)."""
    deadline_ms = int((time.time() + 300) * 1000)  # no request times out while a stage waits
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i, rid in enumerate(ids):
        request = Envelope(rid, {"text": [rid]}, caller=f"c{i}", deadline_ms=deadline_ms)
        producer.produce(pipeline_ingress_topic("yard", "shouty"), encode_envelope(request), rid)
    assert producer.flush(30) == 0


def _results(bootstrap: str, until: set[str]) -> dict[str, list[Envelope]]:
    """Every result on the results topic once each id in ``until`` has one."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "durable-test",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10,
                         "enable.partition.eof": True})  # fmt: skip
    topic = pipeline_results_topic("yard", "shouty")
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    found: dict[str, list[Envelope]] = {}
    at_end: set[int] = set()
    deadline = time.monotonic() + 120
    try:
        while not (until <= set(found) and len(at_end) == PARTITIONS):
            assert time.monotonic() < deadline, f"results of {sorted(until - set(found))} missing"
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            if msg.error() is not None:
                at_end.add(msg.partition())
                continue
            at_end.discard(msg.partition())
            found.setdefault(msg.key().decode(), []).append(decode_envelope(msg.value()))
    finally:
        consumer.close()
    return found


def _unanswered(state: Path) -> set[str]:
    """Request ids the journal keeps (read-only, beside the running up)."""
    path = state / "journal.sqlite3"
    if not path.exists():
        return set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT request_id FROM requests")}
    finally:
        db.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_routing_state_survives_a_stop_and_start(
    engine: str, layout: tuple[Path, Path], tmp_path: Path, ups: list[Up]
) -> None:
    repo, spec = layout
    state = tmp_path / "state"
    extra = ("--engine", engine, "--version", "first=1", "--version", "second=1")
    ups.append(first := Up(layout, state, tmp_path / "up1.log", *extra))
    bootstrap = first.ready()
    for change in (
        ("release", "save", "shouty", "good"),
        ("rollout", "shouty", "second", "2"),
        ("canary", "shouty", "first", "2", "--weight", "50%"),
        ("shadow", "shouty", "second", "1", "--sample-rate", "0.5"),
        ("guard", "shouty", "first", "--error-rate", "0.9", "--min-requests", "1000"),
    ):
        _change(bootstrap, state, *change, repo=repo, spec=spec)
    before = _routing_view(bootstrap, state, spec)
    ids = [f"r{i}" for i in range(12)]
    _send(bootstrap, ids)
    results = _results(bootstrap, set(ids))
    served = [results[rid][0].served_by for rid in ids]
    assert {s["first"] for s in served if s} == {"shout:1", "shout:2"}  # the canary split
    assert first.stop() == 0, first.tail()

    ups.append(second := Up(layout, state, tmp_path / "up2.log", "--engine", engine))
    bootstrap = second.ready()
    assert _routing_view(bootstrap, state, spec) == before
    if engine == "embedded":
        assert second.line("restored").startswith("restored 7 control records, 0 unanswered")
    again = [f"again-{rid}" for rid in ids]
    _send(bootstrap, again)
    results = _results(bootstrap, set(again))
    assert [results[rid][0].served_by for rid in again] == served  # the same callers, routed alike
    assert second.stop() == 0, second.tail()


@pytest.mark.parametrize("killed", ["broker", "up"])
def test_requests_accepted_before_a_hard_kill_are_answered_once_after_restart(
    killed: str, layout: tuple[Path, Path], tmp_path: Path, ups: list[Up]
) -> None:
    """SIGKILL the embedded broker (up then stops, exit 1), or up with everything it started."""
    state = tmp_path / "state"
    extra = ("--version", "first=1", "--version", "second=2")
    ups.append(first := Up(layout, state, tmp_path / "up1.log", *extra))
    bootstrap = first.ready()
    answered = [f"done-{i}" for i in range(5)]
    _send(bootstrap, answered)
    assert set(_results(bootstrap, set(answered))) == set(answered)
    _wait_for(lambda: not _unanswered(state), "the journal to see the results")
    # the second stage stops answering: what is accepted from now on stays unanswered
    stopped = _worker_pid(first.proc.pid, "shout:2")
    os.kill(stopped, signal.SIGSTOP)
    waiting = [f"wait-{i}" for i in range(8)]
    _send(bootstrap, waiting)
    _wait_for(lambda: _unanswered(state) == set(waiting), "the journal to copy the requests")
    view = _routing_view(bootstrap, state, layout[1])
    if killed == "broker":
        os.kill(_child_pid(first.proc.pid, b"--storage-engine"), signal.SIGKILL)
        os.kill(stopped, signal.SIGKILL)  # stopped, it could not drain when up stops it
        assert first.proc.wait(_STOP_S) == 1
        assert "Error: the embedded broker on " in first.tail()
    else:
        first.kill_all()  # up, its broker, router and workers: SIGKILL, all at once

    ups.append(second := Up(layout, state, tmp_path / "up2.log"))
    bootstrap = second.ready()
    assert second.line("restored").startswith("restored 2 control records, 8 unanswered")
    assert _routing_view(bootstrap, state, layout[1]) == view
    _wait_for(lambda: not _unanswered(state), "the journal to see every result")
    results = _results(bootstrap, set(waiting))
    assert {rid: len(found) for rid, found in results.items()} == dict.fromkeys(waiting, 1)
    assert all(r[0].error is None for r in results.values())
    assert second.stop() == 0, second.tail()


def test_an_unreadable_journal_stops_up_until_fresh(
    layout: tuple[Path, Path], tmp_path: Path, ups: list[Up]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "journal.sqlite3").write_bytes(b"not a database, " * 512)
    ups.append(refused := Up(layout, state, tmp_path / "up1.log", "--no-router"))
    assert refused.proc.wait(120) == 1
    assert refused.proc.stdout is not None
    assert refused.proc.stdout.read() == ""  # never announced ready
    said = refused.log.read_text()
    assert "Error: the journal " in said, said[-3000:]
    assert "cannot be read" in said
    assert "pass --fresh to start over" in said

    ups.append(fresh := Up(layout, state, tmp_path / "up2.log", "--no-router", "--fresh"))
    fresh.ready()
    assert fresh.line("restored").startswith("restored 0 control records, 0 unanswered")
    assert fresh.stop() == 0, fresh.tail()


# helpers ----------------------------------------------------------------------------------
def _wait_for(condition: Any, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.05)  # a probe's pause, not a wait for time to pass


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return _stat(pid)[0] == "Z"
    return True


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
    return f"{pid} (gone)"


def _worker_pid(up_pid: int, ref: str) -> int:
    return _child_pid(up_pid, b"serve", ref.encode())


def _child_pid(up_pid: int, *words: bytes) -> int:
    """The process under up whose command line has each of ``words``."""
    for pid in _descendants(up_pid):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if all(word in cmd for word in words):
                return pid
    raise AssertionError(f"no process {words} under up")
