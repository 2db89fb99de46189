"""``Stack`` (what ``modelyard up`` runs) on the real broker with small test models, no router."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from modelyard.broker import partition_counts
from modelyard.client import StageClient
from modelyard.control import CanaryChange, Rollout, ShadowChange
from modelyard.control.topic import read_records, read_state, write_change
from modelyard.errors import ConfigError
from modelyard.repository.build import BuildContext
from modelyard.stack import Stack
from modelyard.topics import (
    audit_topic,
    control_topic,
    model_input_topic,
    pipeline_inbox_topic,
    pipeline_ingress_topic,
    pipeline_results_topic,
)
from modelyard.wire import Envelope

from tests.support.models import write_shout_version
from tests.support.stage import ROOT

pytestmark = pytest.mark.integration

SPEC = """\
pipeline: shouty
version: 1
inputs:
  text: {datatype: BYTES, shape: [-1]}
stages:
  first: {model: shout, inputs: {text: request.text}}
  second: {model: shout, inputs: {text: first.shout}}
outputs:
  shout: second.shout
"""


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(repository with shout:1 and shout:2, pipeline spec)."""
    root = tmp_path_factory.mktemp("up")
    ctx = BuildContext(root=root / "models", cache=root / ".cache")
    write_shout_version(ctx, version="1")
    write_shout_version(ctx, version="2")
    spec = root / "shouty.yaml"
    spec.write_text(SPEC)
    return root / "models", spec


class Lines:
    """Children's output, kept for assertions and for the failure report."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, name: str, line: str) -> None:
        with self._lock:
            self.lines.append((name, line))

    def of(self, name: str) -> list[str]:
        with self._lock:
            return [line for n, line in self.lines if n == name]


def _stack(
    broker: str, unique: str, layout: tuple[Path, Path], lines: Lines, **fields: Any
) -> Stack:
    repo, spec = layout
    options: dict[str, Any] = {"router": False, "partitions": 3, **fields}
    return Stack(
        pipelines=[spec],
        repository=repo,
        bootstrap=broker,
        topic_prefix=unique,
        child_env={"PYTHONPATH": str(ROOT)},  # the test models live in tests.support
        cwd=ROOT,
        on_line=lines,
        **options,
    )


def test_stack_creates_topics_bootstraps_control_and_serves(
    broker: str, unique: str, layout: tuple[Path, Path]
) -> None:
    lines = Lines()
    with _stack(broker, unique, layout, lines, versions={"first": "1"}) as stack:
        assert stack.bootstrap == broker
        assert stack.router_grpc is None
        # topics, with the partition counts the router relies on
        counts = partition_counts(
            broker,
            [
                pipeline_ingress_topic(unique, "shouty"),
                pipeline_inbox_topic(unique, "shouty"),
                pipeline_results_topic(unique, "shouty"),
                audit_topic(unique),
                model_input_topic(unique, "shout", "1"),
                model_input_topic(unique, "shout", "2"),
                control_topic(unique),
            ],
        )
        assert list(counts.values()) == [3, 3, 3, 3, 3, 3, 1]
        # control: one rollout per stage, by "modelyard up": --version, else the latest
        records = [p.record for p in read_records(broker, prefix=unique)]
        assert [(r.actor, r.change.type) for r in records] == [("modelyard up", "rollout")] * 2
        routing = stack.state.pipeline("shouty")
        assert (routing.stage("first").active, routing.stage("second").active) == ("1", "2")
        # one worker per version in use, each ready and answering on its topic
        assert set(stack.workers) == {"shout:1", "shout:2"}
        topic = stack.workers["shout:2"]["topic"]
        assert topic == model_input_topic(unique, "shout", "2")
        client = StageClient(broker, reply_topic=f"{unique}.replies")
        try:
            reply = client.call(topic, Envelope("r1", {"text": ["hello"]}), timeout=30)
        finally:
            client.close()
        assert (reply.error, reply.fields["shout"].tolist()) == (None, [b"HELLO"])
        assert any(line.startswith("modelyard stage ready") for line in lines.of("shout:2"))
    # stopped by SIGTERM: drained and committed
    assert any("stopped" in line and "clean=True" in line for line in lines.of("shout:2")), (
        lines.of("shout:2")
    )


def test_a_version_coming_into_use_gets_a_worker(
    broker: str, unique: str, layout: tuple[Path, Path]
) -> None:
    lines = Lines()
    with _stack(broker, unique, layout, lines) as stack:
        assert set(stack.workers) == {"shout:2"}  # the latest, for both stages
        write_change(
            broker, "shouty", Rollout(stage="first", version="1"), actor="t", prefix=unique
        )
        ready = stack.wait_worker("shout:1", timeout_s=60)
        assert ready["topic"] == model_input_topic(unique, "shout", "1")
        assert set(stack.workers) == {"shout:1", "shout:2"}


def test_a_shadow_only_version_runs_niced_until_it_serves(
    broker: str, unique: str, layout: tuple[Path, Path]
) -> None:
    lines = Lines()
    with _stack(broker, unique, layout, lines, versions={"first": "1", "second": "1"}) as stack:
        assert set(stack.workers) == {"shout:1"}
        assert os.getpriority(os.PRIO_PROCESS, stack.processes()["shout:1"]) == 0
        change = ShadowChange(stage="second", version="2", sample_rate=1.0)
        write_change(broker, "shouty", change, actor="t", prefix=unique)
        stack.wait_worker("shout:2", timeout_s=60)
        shadow_pid = stack.processes()["shout:2"]
        assert os.getpriority(os.PRIO_PROCESS, shadow_pid) == 10
        # a canary now: the version serves callers, so it gets a worker at normal priority
        canary = CanaryChange(stage="second", version="2", weight=0.5)
        write_change(broker, "shouty", canary, actor="t", prefix=unique)
        deadline = time.monotonic() + 30
        while stack.processes()["shout:2"] == shadow_pid:
            assert time.monotonic() < deadline, "the niced worker was not replaced"
            assert not stack.wait(0.05), stack.failure
        ready = stack.wait_worker("shout:2", timeout_s=60)
        assert os.getpriority(os.PRIO_PROCESS, stack.processes()["shout:2"]) == 0
        deadline = time.monotonic() + 60  # it drains and exits once its successor is ready
        while _state(shadow_pid) not in ("gone", "Z"):
            assert time.monotonic() < deadline, f"the replaced worker {shadow_pid} still runs"
            assert not stack.wait(0.05), stack.failure
        client = StageClient(broker, reply_topic=f"{unique}.replies")
        try:
            reply = client.call(ready["topic"], Envelope("r1", {"text": ["hi"]}), timeout=30)
        finally:
            client.close()
        assert reply.fields["shout"].tolist() == [b"HI"]
        assert stack.failure is None
    niced = [line for line in lines.of("shout:2") if "stopped" in line and "clean=True" in line]
    assert len(niced) == 2, lines.of("shout:2")  # the replaced worker, then its successor


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_second_up_keeps_the_routing_it_finds(
    broker: str, unique: str, layout: tuple[Path, Path]
) -> None:
    with _stack(broker, unique, layout, Lines(), versions={"first": "1", "second": "1"}):
        pass
    with _stack(broker, unique, layout, Lines(), versions={"first": "2"}) as stack:
        routing = stack.state.pipeline("shouty")
        assert (routing.stage("first").active, routing.stage("second").active) == ("1", "1")
    assert len(read_records(broker, prefix=unique)) == 2  # nothing rolled out the second time


def test_bad_versions_are_refused_before_anything_starts(
    broker: str, unique: str, layout: tuple[Path, Path]
) -> None:
    with pytest.raises(ConfigError, match="no version '7' of model 'shout'"):
        _stack(broker, unique, layout, Lines(), versions={"first": "7"}).start()
    with pytest.raises(ConfigError, match="--version names no stage: third"):
        _stack(broker, unique, layout, Lines(), versions={"third": "1"}).start()
    assert read_records(broker, prefix=unique) == []


def test_up_command_announces_and_stops_cleanly_on_sigterm(layout: tuple[Path, Path]) -> None:
    """The CLI: its own embedded broker, the ready line on stdout, SIGTERM -> exit 0."""
    repo, spec = layout
    argv = [sys.executable, "-m", "modelyard.cli.main", "up", "--no-router", "--port", "0",
            "--pipeline", str(spec), "--repository", str(repo), "--partitions", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until up is ready (or exits: empty line)
        assert first.startswith("modelyard up ready bootstrap=127.0.0.1:"), first
        assert first.rstrip().endswith(" router=off")
        bootstrap = first.split()[3].removeprefix("bootstrap=")
        routing = read_state(bootstrap).pipeline("shouty")
        assert routing.stage("first").active == "2"
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        assert proc.wait(60) == 0
        assert "worker    shout:2: grpc=127.0.0.1:" in rest
        assert rest.rstrip().endswith("modelyard up: stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_worker_that_dies_is_restarted(
    broker: str, unique: str, layout: tuple[Path, Path]
) -> None:
    with _stack(broker, unique, layout, Lines()) as stack:
        old = stack.processes()["shout:2"]
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while stack.processes()["shout:2"] == old:  # probe: the monitor replaces it
            assert time.monotonic() < deadline, "the dead worker was not restarted"
            assert not stack.wait(0.05), stack.failure
        stack.wait_worker("shout:2", timeout_s=60)
        assert stack.failure is None


FAKE_CLI = (sys.executable, "-m", "tests.support.fake_router_cli")


def test_routers_are_started_with_the_agreed_command_line(
    broker: str, unique: str, layout: tuple[Path, Path]
) -> None:
    repo, spec = layout
    lines = Lines()
    stack = _stack(broker, unique, layout, lines, router=True, router_port=4321, cli=FAKE_CLI)
    with stack:
        assert stack.router_grpc == "127.0.0.1:4321"
        assert stack.routers["shouty"]["pipeline"] == "shouty"
        argv = lines.of("router:shouty")[0].removeprefix("fake router argv: ").split()
        assert argv == [
            str(spec.absolute()), "--repository", str(repo.absolute()), "--bootstrap", broker,
            "--grpc-port", "4321", "--metrics-port", "0", "--topic-prefix", unique,
        ]  # fmt: skip
    assert stack.failure is None


@pytest.mark.parametrize(("marker", "code"), [("router-fails", 3), ("router-exits", 4)])
def test_a_router_that_fails_or_dies_fails_the_stack(
    broker: str, unique: str, layout: tuple[Path, Path], tmp_path: Path, marker: str, code: int
) -> None:
    repo, _ = layout
    spec = tmp_path / "shouty.yaml"
    spec.write_text(SPEC)
    (tmp_path / marker).touch()
    stack = _stack(broker, unique, (repo, spec), Lines(), router=True, cli=FAKE_CLI)
    if marker == "router-fails":
        with pytest.raises(ConfigError, match=rf"router:shouty did not become ready .*code {code}"):
            stack.start()
        return
    with stack:
        assert stack.wait(30), "the stack did not notice its router died"
        assert stack.failure == f"router:shouty exited with code {code}"
