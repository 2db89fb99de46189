"""Pipeline ``tf`` (two stages of the shout model) as real processes on a real broker, for the
tests that kill, add and remove workers or brokers under load and count what it cost.

One ``modelyard serve shout:1`` serves both stages; routers are ``modelyard router`` processes.
Results are read ``read_committed`` (librdkafka's default), so an exactly-once worker's aborted
transactions are never counted. :class:`Tally` is what a run cost: requests sent, answered, lost,
duplicated, and the stage replies beyond one per stage and request.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from modelyard.control import Rollout
from modelyard.control.topic import write_change
from modelyard.repository.build import BuildContext
from modelyard.topics import pipeline_inbox_topic, pipeline_ingress_topic, pipeline_results_topic
from modelyard.wire import Envelope, encode_envelope

from tests.support.kafka_io import Collector, produce_all
from tests.support.keys import admin
from tests.support.models import write_shout_version
from tests.support.stage import RouterProcess, StageProcess
from tests.support.waiting import wait_until

__all__ = [
    "PIPELINE",
    "SPEC_TEXT",
    "Pipeline",
    "SteadyLoad",
    "Tally",
    "check",
    "read_to_end",
    "stop_all",
    "write_repository",
]

PIPELINE = "tf"
SPEC_TEXT = """
pipeline: tf
version: 1
inputs: {text: {datatype: BYTES, shape: [-1]}}
stages:
  first: {model: shout, inputs: {text: request.text}}
  second: {model: shout, inputs: {text: first.shout}}
outputs: {loud: second.shout}
"""
Request = tuple[str, bytes, list[tuple[str, bytes]]]


def write_repository(root: Path) -> Path:
    """shout:1 and the spec file ``tf.yaml`` under ``root``; returns ``root``."""
    write_shout_version(BuildContext(root=root, cache=root / ".cache"), "1")
    (root / f"{PIPELINE}.yaml").write_text(SPEC_TEXT)
    return root


@dataclass(frozen=True)
class Tally:
    """Results per request id after every worker stopped: what a fault cost."""

    sent: int
    answered: int
    lost: int
    duplicated: int  # results beyond the first of a request
    extra_replies: int  # stage replies beyond one per stage and request (the router drops them)

    def row(self, what: str) -> str:
        counts = f"sent {self.sent}, answered {self.answered}, lost {self.lost}"
        return f"{what}: {counts}, duplicated {self.duplicated}, extra replies {self.extra_replies}"


class Pipeline:
    """Pipeline ``tf`` on ``broker`` under a fresh topic prefix; workers keep their state under
    ``state`` (one folder per name: a successor given the same name takes the same slot)."""

    def __init__(
        self,
        broker: str,
        root: Path,
        state: Path,
        *,
        exactly_once: bool,
        total: int = 1500,
        partitions: int = 2,
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: more environment of every worker (e.g. ``MODELYARD_STUCK_COMMIT_S``)."""
        self.broker, self.root, self.state, self.partitions = broker, root, state, partitions
        self.env = env
        self.prefix = f"tf-{uuid.uuid4().hex[:8]}"
        self.exactly_once = exactly_once
        self.flags = ("--exactly-once",) if exactly_once else ()
        self.ids = [f"r-{i}" for i in range(total)]

    @property
    def mode(self) -> str:
        return "exactly once" if self.exactly_once else "at least once"

    def stage(self, name: str = "stage") -> StageProcess:
        stage = StageProcess("shout:1", self.root, *self._common(name), "--no-grpc", env=self.env)
        stage.wait_ready(90)
        return stage

    def router(self, name: str = "router") -> RouterProcess:
        options = (*self._common(name), "--no-grpc", "--partitions", str(self.partitions))
        router = RouterProcess(str(self.root / f"{PIPELINE}.yaml"), self.root, *options,
                               env=self.env)  # fmt: skip
        router.wait_ready(90)
        return router

    def roll_out(self) -> None:
        for stage in ("first", "second"):
            write_change(self.broker, PIPELINE, Rollout(stage=stage, version="1"),
                         signer=admin(), prefix=self.prefix)  # fmt: skip

    def send_all(self) -> None:
        produce_all(self.broker, self.ingress, [_request(rid) for rid in self.ids])

    @property
    def ingress(self) -> str:
        return pipeline_ingress_topic(self.prefix, PIPELINE)

    @property
    def inbox(self) -> str:
        return pipeline_inbox_topic(self.prefix, PIPELINE)

    @property
    def results_topic(self) -> str:
        return pipeline_results_topic(self.prefix, PIPELINE)

    def results(self) -> Collector:
        return Collector(self.broker, self.results_topic, self.partitions)

    def all_answered(
        self,
        results: Collector,
        workers: list[StageProcess] | None = None,
        timeout_s: float = 180,
        *,
        restart_stuck: bool = False,
    ) -> None:
        """Until every request has a result; fails at once when one of ``workers`` exits.
        ``restart_stuck``: one that exits because a commit blocked (``CommitStuckError``) is
        started again under its name, as its supervisor (Kubernetes, ``up``) would, and
        replaces it in ``workers``."""
        wanted = {rid.encode() for rid in self.ids}
        workers = workers if workers is not None else []

        def done(messages: list[Message]) -> bool:
            for i, worker in enumerate(workers):
                code = worker.proc.poll()
                if code is not None and restart_stuck and _commit_stuck(worker):
                    print(f"{type(worker).__name__} exited on a blocked commit; restarting it")
                    worker.kill()  # gone already: its output closed
                    workers[i] = self._successor(worker)
                    continue
                assert code is None, f"exit code {code}:\n" + "\n".join(worker.lines[-20:])
            return wanted <= {x.key() for x in messages}

        try:
            results.until(done, timeout_s)
        except TimeoutError as exc:  # say what each worker was doing
            logs = "\n".join(f"--- {type(w).__name__} {w.proc.pid}:\n" + "\n".join(w.lines[-15:])
                              + _stacks(w.proc.pid) for w in workers)  # fmt: skip
            raise TimeoutError(f"{exc}\n{logs}") from None

    def tally(self) -> Tally:
        """Every committed result, read to the end once all workers have stopped."""
        counts = Counter(read_to_end(self.broker, self.results_topic, self.partitions))
        answered = [rid for rid in self.ids if counts[rid.encode()]]
        duplicated = sum(n - 1 for n in counts.values() if n > 1)
        replies = len(read_to_end(self.broker, self.inbox, self.partitions))
        lost = len(self.ids) - len(answered)
        return Tally(len(self.ids), len(answered), lost, duplicated, replies - 2 * len(self.ids))

    def _successor(self, worker: StageProcess) -> StageProcess:
        return self.router() if isinstance(worker, RouterProcess) else self.stage()

    def _common(self, name: str) -> tuple[str, ...]:
        return ("--bootstrap", self.broker, "--topic-prefix", self.prefix,
                "--state-dir", str(self.state / name), *self.flags)  # fmt: skip


def _request(rid: str) -> Request:
    return rid, encode_envelope(Envelope(rid, {"text": [rid]})), []


class SteadyLoad:
    """Requests produced from a thread at a steady pace until :meth:`finish`: each ``tick_s``,
    the next ``per_tick`` ids, appended to ``pipeline.ids`` (what :meth:`Pipeline.tally` counts).
    """

    def __init__(self, pipeline: Pipeline, per_tick: int = 10, tick_s: float = 0.1) -> None:
        self.pipeline, self.per_tick, self.tick_s = pipeline, per_tick, tick_s
        pipeline.ids = []
        self._stop = threading.Event()
        self._producer = Producer({"bootstrap.servers": pipeline.broker, "linger.ms": 5,
                                   "enable.idempotence": True})  # fmt: skip
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)

    @property
    def sent(self) -> int:
        return len(self.pipeline.ids)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.finish()

    def _run(self) -> None:
        ids = self.pipeline.ids
        while not self._stop.wait(self.tick_s):
            for _ in range(self.per_tick):
                rid = f"r-{len(ids)}"
                self._producer.produce(self.pipeline.ingress, _request(rid)[1], rid)
                ids.append(rid)
            self._producer.poll(0)

    def wait_beyond(self, count: int, timeout_s: float = 30.0) -> None:
        """Until more than ``count`` requests are sent: what is done next is done under load,
        even when what was done before took less than a tick."""

        def beyond() -> bool:
            assert self._thread.is_alive(), f"the load stopped at {self.sent} sent"
            return self.sent > count

        wait_until(beyond, f"a request sent past {count}", timeout_s)

    def finish(self) -> int:
        """Stop sending; every request sent is delivered. The number sent."""
        self._stop.set()
        self._thread.join(30)
        assert self._producer.flush(60) == 0, "not every request was delivered"
        return self.sent


def read_to_end(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    """The keys of every committed record of ``topic`` (nothing writes to it any more)."""
    config = {"bootstrap.servers": bootstrap, "group.id": f"tally-{topic}",
              "isolation.level": "read_committed", "enable.auto.commit": False}  # fmt: skip
    consumer = Consumer(config)
    try:
        tps = [TopicPartition(topic, p, 0) for p in range(partitions)]
        ends = [consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in tps]
        consumer.assign(tps)
        keys: list[bytes] = []
        while any(_behind(tp, end) for tp, end in zip(consumer.position(tps), ends, strict=True)):
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                keys.append(msg.key() or b"")
        return keys
    finally:
        consumer.close()


def _behind(position: TopicPartition, end: int) -> bool:
    """Whether records before ``end`` are still to read (none read yet: a negative offset)."""
    return end > 0 and position.offset < end


def stop_all(workers: Sequence[StageProcess]) -> None:
    """SIGTERM every worker (each drains); then check that each exited 0."""
    codes = [(worker, worker.terminate()) for worker in workers]  # in order: routers first
    for worker, code in codes:
        assert code == 0, f"exit code {code}:\n" + "\n".join(worker.lines[-20:])


def check(pipeline: Pipeline, what: str, tally: Tally) -> None:
    """Print the kill-table row (``-s`` shows it): nothing lost; exactly once, no duplicate."""
    print(tally.row(f"{what} ({pipeline.mode})"))
    assert tally.lost == 0, tally
    if pipeline.exactly_once:
        assert tally.duplicated == 0, tally


def _commit_stuck(worker: StageProcess) -> bool:
    return any("a commit has been blocked for" in line for line in worker.lines)


def _stacks(pid: int) -> str:
    """The threads' Python stacks of a stuck worker, where py-spy is installed (it is no
    dependency: a developer chasing a stall installs it); empty otherwise."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        return ""
    done = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    return "\n" + done.stdout + done.stderr
