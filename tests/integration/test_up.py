"""``Stack`` (what ``modelyard up`` runs) on the real broker with small test models; routers are
a stand-in (``tests.support.fake_router_cli``) except where a test says otherwise."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from modelyard.api.pipeline.v1 import pipeline_pb2 as pb
from modelyard.api.pipeline.v1 import pipeline_pb2_grpc as pb_grpc
from modelyard.broker import EmbeddedBroker, partition_counts
from modelyard.client import StageClient
from modelyard.control import CanaryChange, Rollout, ShadowChange
from modelyard.control.topic import read_records, read_state, write_change
from modelyard.errors import ConfigError
from modelyard.monitor.settings import monitor_topic
from modelyard.monitor.show import read_summaries
from modelyard.monitor.summary import combine
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

from tests.support.keys import admin, keys_dir
from tests.support.models import SHOUTY_SPEC, shouty_layout
from tests.support.stage import ROOT

pytestmark = pytest.mark.integration

SPEC = SHOUTY_SPEC


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(repository with shout:1 and shout:2, pipeline spec)."""
    return shouty_layout(tmp_path_factory.mktemp("up"))


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
    options: dict[str, Any] = {"router": False, "partitions": 3, "keys_dir": keys_dir(), **fields}
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
        # control: one rollout per stage, signed by up's admin key: --version, else the latest
        records = [p.record for p in read_records(broker, prefix=unique)]
        assert [(r.actor, r.change.type) for r in records] == [("admin", "rollout")] * 2
        assert all(r.signature for r in records)  # signed by the stack's admin key
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
            broker, "shouty", Rollout(stage="first", version="1"), signer=admin(), prefix=unique
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
        write_change(broker, "shouty", change, signer=admin(), prefix=unique)
        stack.wait_worker("shout:2", timeout_s=60)
        shadow_pid = stack.processes()["shout:2"]
        assert os.getpriority(os.PRIO_PROCESS, shadow_pid) == 10
        # a canary now: the version serves callers, so it gets a worker at normal priority
        canary = CanaryChange(stage="second", version="2", weight=0.5)
        write_change(broker, "shouty", canary, signer=admin(), prefix=unique)
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


def test_up_command_announces_and_stops_cleanly_on_sigterm(
    layout: tuple[Path, Path], tmp_path: Path
) -> None:
    """The CLI: its own embedded broker, the ready line on stdout, SIGTERM -> exit 0."""
    repo, spec = layout
    argv = [sys.executable, "-m", "modelyard.cli.main", "up", "--no-router", "--port", "0",
            "--pipeline", str(spec), "--repository", str(repo), "--partitions", "2",
            "--state-dir", str(tmp_path / "state")]  # fmt: skip
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
        assert "monitor   metrics=127.0.0.1:" in rest
        assert f"modelyard monitor show shouty --bootstrap {bootstrap} " in rest
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
        while stack.processes()["shout:2"] == old:  # probe: the watcher replaces it
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


def _marked_spec(tmp_path: Path, marker: str) -> Path:
    """A copy of the spec beside ``marker``, which tells the stand-in router how to misbehave."""
    spec = tmp_path / "shouty.yaml"
    spec.write_text(SPEC)
    (tmp_path / marker).touch()
    return spec


def test_a_router_that_fails_before_it_is_ready_fails_the_start(
    broker: str, unique: str, layout: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, _ = layout
    spec = _marked_spec(tmp_path, "router-fails")
    stack = _stack(broker, unique, (repo, spec), Lines(), router=True, cli=FAKE_CLI)
    with pytest.raises(ConfigError, match=r"router:shouty did not become ready .*code 3"):
        stack.start()


def test_a_router_that_keeps_dying_fails_the_stack_after_its_restarts(
    broker: str, unique: str, layout: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, _ = layout
    spec = _marked_spec(tmp_path, "router-exits")  # exits 4 right after every ready line
    lines = Lines()
    stack = _stack(broker, unique, (repo, spec), lines, router=True, cli=FAKE_CLI, max_restarts=2)
    with stack:
        assert stack.wait(60), "the stack did not give up on its router"
        assert stack.failure == "router:shouty exited with code 4 after 2 restart(s)"
    starts = [line for line in lines.of("router:shouty") if line.startswith("fake router argv")]
    assert len(starts) == 3  # the first one and its two restarts


def _infer(stub: pb_grpc.PipelineServiceStub, rid: str, text: bytes) -> list[bytes]:
    tensor = pb.Tensor(name="text", datatype="BYTES", shape=[1], bytes_contents=[text])
    request = pb.InferRequest(id=rid, pipeline="shouty", inputs=[tensor])
    response = stub.Infer(request, timeout=60, wait_for_ready=True)  # reconnects if need be
    assert not response.error.code, response.error
    [shout] = response.outputs
    return list(shout.bytes_contents)


_TCP_STATES = {"04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT", "0A": "LISTEN"}


def _port_states(port: int) -> list[str]:
    """States of this machine's TCP sockets whose local port is ``port`` (from /proc/net)."""
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            rows = [line.split() for line in f.readlines()[1:]]
        states += [_TCP_STATES.get(r[3], r[3]) for r in rows if int(r[1][-4:], 16) == port]
    return states


def test_a_killed_router_comes_back_on_its_port_and_serves(
    broker: str, unique: str, layout: tuple[Path, Path]
) -> None:
    """The real router, on a port the OS chose: SIGKILLed while a caller is connected, it is
    restarted on the same port, and the caller's channel gets its next result through the new
    router. (Whether the killed one's connection still lingers when the new one binds depends
    on the kernel's timing; test_a_broker_port_left_in_time_wait_is_taken_again makes sure.)"""
    lines = Lines()
    with _stack(broker, unique, layout, lines, router=True, router_port=0) as stack:
        address = stack.router_grpc
        assert address is not None
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.PipelineServiceStub(channel)
            assert _infer(stub, "before", b"hello") == [b"HELLO"]
            killed = stack.processes()["router:shouty"]
            os.kill(killed, signal.SIGKILL)  # its connection to this channel is open
            deadline = time.monotonic() + 30
            while stack.processes()["router:shouty"] == killed:  # probe: the watcher restarts it
                assert time.monotonic() < deadline, "the killed router was not restarted"
                assert not stack.wait(0.05), stack.failure
            ready = stack.wait_child("router:shouty", timeout_s=90)
            assert ready["grpc"] == address
            assert _infer(stub, "after", b"again") == [b"AGAIN"]
        assert stack.router_grpc == address
        assert stack.failure is None
    announced = [line for line in lines.of("router:shouty") if line.startswith("modelyard router")]
    assert len(announced) == 2, announced


def test_the_monitor_windows_what_the_router_serves(
    broker: str, unique: str, layout: tuple[Path, Path]
) -> None:
    """up's monitor: started with the stack's broker, prefix, window, specs, keyring and writer
    key, at normal priority (its guards withdraw bad canaries), ready with its metrics address;
    the hops of what the real router serves come out as closed windows."""
    lines = Lines()
    stack = _stack(broker, unique, layout, lines, router=True, monitor_window_s=1.0)
    with stack:
        assert stack.services["monitor"]["metrics"].startswith("127.0.0.1:")
        pid = stack.processes()["monitor"]
        keys = stack.keys
        assert keys is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")
        assert argv[argv.index("monitor") :] == [
            "monitor", "--bootstrap", broker, "--topic-prefix", unique,
            "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--window-s", "1.0",
            "--spec", str(layout[1].absolute()),
            "--keyring", str(keys.keyring), "--writer-key", str(keys.monitor_key),
        ]  # fmt: skip
        assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0)
        address = stack.router_grpc
        assert address is not None
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.PipelineServiceStub(channel)
            assert _infer(stub, "watched", b"hello") == [b"HELLO"]
        deadline = time.monotonic() + 60  # a 1 s window closes after 5 s of grace
        while len(windows := _windows(broker, unique)) < 2:  # probe: one per stage
            assert time.monotonic() < deadline, f"no windows from the monitor: {windows}"
            assert not stack.wait(0.2), stack.failure
        assert windows == {
            ("first", "shout", "2", "active"): 1,
            ("second", "shout", "2", "active"): 1,
        }
    assert stack.failure is None


def _windows(broker: str, prefix: str) -> dict[tuple[str, ...], int]:
    """Requests per (stage, model, version, role) of pipeline shouty, over the monitor's windows."""
    counts: dict[tuple[str, ...], int] = {}
    for window in combine(read_summaries(broker, monitor_topic(prefix), timeout_s=5)):
        if window.key.pipeline == "shouty":
            key = window.key[1:]
            counts[key] = counts.get(key, 0) + window.stats.requests
    return counts


def _children(pid: int) -> dict[int, str]:
    """Live child processes of ``pid``: pid -> command line."""
    found = {}
    for entry in [e for e in Path("/proc").iterdir() if e.name.isdigit()]:
        with contextlib.suppress(OSError):  # exited while we looked
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
    return {p: cmd.decode() for p, cmd in found.items()}


def _worker_of(proc: subprocess.Popen[str], other_than: int | None = None) -> int:
    """Pid of up's ``modelyard serve`` child, once there is one other than ``other_than``."""
    deadline = time.monotonic() + 60
    while True:
        pids = [p for p, cmd in _children(proc.pid).items() if " serve " in cmd and p != other_than]
        if pids:
            return pids[0]
        assert time.monotonic() < deadline, "up started no worker"
        try:
            code = proc.wait(0.05)  # the probe's pause; up must not exit meanwhile
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"up exited with code {code}")


def test_up_command_exits_1_naming_a_child_that_keeps_dying(
    layout: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, spec = layout
    argv = [sys.executable, "-m", "modelyard.cli.main", "up", "--no-router", "--port", "0",
            "--pipeline", str(spec), "--repository", str(repo), "--partitions", "2",
            "--max-restarts", "1", "--state-dir", str(tmp_path / "state"),
            "--no-monitor"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "up.log"
    with log.open("w") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err,
                                text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("modelyard up ready"), log.read_text()
        assert not [c for c in _children(proc.pid).values() if " monitor " in c]  # --no-monitor
        first = _worker_of(proc)
        os.kill(first, signal.SIGKILL)
        os.kill(_worker_of(proc, other_than=first), signal.SIGKILL)  # its one restart
        assert proc.wait(60) == 1, log.read_text()[-3000:]
        reason = "worker shout:2 exited with code -9 (SIGKILL) after 1 restart(s)"
        assert f"Error: {reason}; stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_broker_port_left_in_time_wait_is_taken_again(tmp_path: Path) -> None:
    """``up --port N`` right after a run on N: that run's connections linger in TIME_WAIT, which
    must not make the port look taken."""
    port = _port_left_in_time_wait(tmp_path)
    with EmbeddedBroker(port, log_file=tmp_path / "second.log") as second:
        assert second.running


def _port_left_in_time_wait(tmp_path: Path, tries: int = 5) -> int:
    """A port a stopped broker left in TIME_WAIT: it closed a caller's connection first. A broker
    that resets the connection instead (RST: no TIME_WAIT) does not set the scene; try again."""
    for attempt in range(tries):
        with EmbeddedBroker(log_file=tmp_path / f"first-{attempt}.log") as first:
            caller = socket.create_connection((first.host, first.port))
        with caller:
            try:
                closed_cleanly = caller.recv(1) == b""
            except ConnectionResetError:
                closed_cleanly = False
        if closed_cleanly and "TIME_WAIT" in _port_states(first.port):
            return first.port
    raise AssertionError(f"no stopped broker left its port in TIME_WAIT in {tries} tries")
