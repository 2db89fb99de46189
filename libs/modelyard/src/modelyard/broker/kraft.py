"""Apache Kafka as a broker engine: N KRaft nodes on loopback, from the jars ``make setup`` fetched.

:class:`KafkaCluster` formats each node's storage with a fresh cluster id, starts the JVMs, waits
until a metadata request lists every node, and stops them with SIGTERM (SIGKILL after a grace).
Storage lives in a temporary directory removed at stop unless ``data_dir`` is given; a node can
be killed and started again (same storage) for broker-fault tests.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from modelyard.broker.embedded import BrokerStartError, free_port, port_is_free
from modelyard.broker.kraft_config import (
    KAFKA_VERSION,
    LOG4J2_XML,
    KraftNode,
    class_archive,
    default_kafka_lib,
    java_command,
    new_cluster_id,
    server_properties,
)
from modelyard.broker.kraft_security import SaslScram

__all__ = ["KafkaCluster"]

_TAIL_LINES = 20
_PROBE_S = 0.5


class KafkaCluster:
    """``nodes`` combined broker/controller Apache Kafka nodes; one by default.

    ``port`` fixes the first node's client port (0: free ports from the OS for every listener).
    ``security`` turns on SASL/SCRAM listeners and ACLs (its users are created at format time);
    :meth:`client_config` then gives the settings a client logs in with.
    """

    def __init__(
        self,
        nodes: int = 1,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        data_dir: Path | str | None = None,
        lib: Path | str | None = None,
        start_timeout_s: float = 90.0,
        security: SaslScram | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, not {nodes}")
        self.host = host
        self.lib = Path(lib) if lib is not None else default_kafka_lib()
        self.start_timeout_s = start_timeout_s
        self.security = security
        self.nodes = [
            KraftNode(i, host, (port if i == 1 and port else free_port(host)), free_port(host))
            for i in range(1, nodes + 1)
        ]
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        # class archives being recorded, by pid: (where the JVM writes, where it belongs)
        self._recording: dict[int, tuple[Path, Path]] = {}

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``, comma-separated, for ``bootstrap.servers``."""
        return ",".join(n.bootstrap for n in self.nodes)

    def client_config(self, user: str | None = None) -> dict[str, Any]:
        """librdkafka settings beside ``bootstrap.servers``: none on an open cluster; on a
        secured one, SASL as ``user`` (the super user when None)."""
        return self.security.client_config(user) if self.security is not None else {}

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def running(self) -> bool:
        """Whether every node's process is alive."""
        return len(self._procs) == len(self.nodes) and all(
            p.poll() is None for p in self._procs.values()
        )

    def pid(self, node_id: int) -> int | None:
        proc = self._procs.get(node_id)
        return proc.pid if proc is not None else None

    def node_dir(self, node_id: int) -> Path:
        if self._data_dir is None:
            raise RuntimeError("cluster not started")
        return self._data_dir / f"node-{node_id}"

    def log_path(self, node_id: int) -> Path:
        """The node's output (warnings, errors and its start and stop lines)."""
        return self.node_dir(node_id) / "node.log"

    def start(self) -> Self:
        """Format storage where it is empty, start every node, wait until all answer."""
        if self._procs:
            raise RuntimeError("cluster already started")
        self._check_lib()
        for node in self.nodes:
            if not port_is_free(self.host, node.port):
                raise BrokerStartError(f"port {node.bootstrap} is already in use")
        if self._data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="modelyard-kafka-")
            self._data_dir = Path(self._tmp.name)
        try:
            self._format()
            for node in self.nodes:
                self._launch(node)
            self._wait_ready(self.bootstrap, {n.node_id for n in self.nodes})
        except BaseException:
            self.stop()
            raise
        return self

    def _check_lib(self) -> None:
        if not any(self.lib.glob("kafka_2.13-*.jar")):
            raise BrokerStartError(
                f"no Apache Kafka jars in {self.lib}: run `make setup` (Kafka {KAFKA_VERSION})"
            )
        if shutil.which("java") is None:
            raise BrokerStartError("no `java` on PATH: run `make setup` (installs Java 17)")

    def _format(self) -> None:
        """Write each node's config and format the storage that has no meta.properties yet."""
        cluster_id, formatting = new_cluster_id(), []
        for node in self.nodes:
            home = self.node_dir(node.node_id)
            (home / "data").mkdir(parents=True, exist_ok=True)
            (home / "server.properties").write_text(
                server_properties(node, self.nodes, home / "data", self.security)
            )
            (home / "log4j2.xml").write_text(LOG4J2_XML)
            if not (home / "data" / "meta.properties").exists():
                args = ("format", "-t", cluster_id, "-c", str(home / "server.properties"),
                        *(self.security.format_args() if self.security else ()))  # fmt: skip
                formatting.append((node, self._java(node, "kafka.tools.StorageTool", *args)))
        for _, proc in formatting:  # formatted side by side: each is a JVM start
            self._publish_archive(proc)
        for node, proc in formatting:
            if proc.returncode != 0:
                raise BrokerStartError(
                    self._failure(node, f"storage format failed (exit code {proc.returncode})")
                )

    def _java(self, node: KraftNode, main_class: str, *args: str) -> subprocess.Popen[bytes]:
        home = self.node_dir(node.node_id)
        archive = class_archive(self.lib, main_class)
        record = None
        if archive is not None and not archive.exists() and node.node_id == 1:
            archive.parent.mkdir(exist_ok=True)  # the first node records; the others wait
            record = archive.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
        argv = java_command(self.lib, main_class, *args, log_config=home / "log4j2.xml",
                            archive=archive if archive and archive.exists() else None,
                            write_archive=record)  # fmt: skip
        with (home / "node.log").open("ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # its own process group: Ctrl-C reaches us, and we stop the nodes after clients
                process_group=0,
            )
        if record is not None and archive is not None:
            self._recording[proc.pid] = (record, archive)
        return proc

    def _publish_archive(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait for ``proc``; move the class archive it recorded, if any, into place."""
        proc.wait()
        record, archive = self._recording.pop(proc.pid, (None, None))
        if record is None or archive is None:
            return
        if proc.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM) and record.exists():
            record.replace(archive)
        else:
            record.unlink(missing_ok=True)

    def _launch(self, node: KraftNode) -> None:
        props = str(self.node_dir(node.node_id) / "server.properties")
        self._procs[node.node_id] = self._java(node, "kafka.Kafka", props)

    def _wait_ready(self, bootstrap: str, expected: set[int]) -> None:
        """Until a metadata request to ``bootstrap`` lists every node id in ``expected``."""
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            for node_id, proc in self._procs.items():
                if proc.poll() is not None:
                    raise BrokerStartError(self._failure(self.nodes[node_id - 1], "exited"))
            if expected <= _broker_ids(bootstrap, self.client_config()):
                return
            if time.monotonic() > deadline:
                raise BrokerStartError(self._failure(self.nodes[0], "did not answer in time"))

    def _failure(self, node: KraftNode, what: str) -> str:
        proc = self._procs.get(node.node_id)
        code = proc.poll() if proc is not None else None
        status = f" (exit code {code})" if code is not None else ""
        return f"Kafka node {node.node_id} on {node.bootstrap} {what}{status}{self._tail(node)}"

    def _tail(self, node: KraftNode) -> str:
        try:
            lines = self.log_path(node.node_id).read_text(errors="replace").splitlines()
        except OSError:
            return "; no output"
        text = "\n".join(lines[-_TAIL_LINES:]).rstrip()
        return f"; last output:\n{text}" if text else "; no output"

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (a broker fault); :meth:`restart` brings it back on its storage."""
        proc = self._procs.pop(node_id)
        proc.kill()
        self._publish_archive(proc)

    def restart(self, node_id: int) -> None:
        """Start a stopped or killed node again and wait until the cluster lists every node."""
        if node_id in self._procs:
            raise RuntimeError(f"node {node_id} is running")
        node = self.nodes[node_id - 1]
        self._launch(node)
        self._wait_ready(node.bootstrap, {node_id})

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM every node (a controlled shutdown), SIGKILL what outlives ``grace_s``, reap,
        remove temporary storage. Safe to call twice."""
        procs, self._procs = list(self._procs.values()), {}
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
            self._publish_archive(proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp, self._data_dir = None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _broker_ids(bootstrap: str, extra: dict[str, Any]) -> set[int]:
    """Node ids a metadata request lists (none while nothing answers within a short probe)."""
    config = {"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 1000}
    admin = AdminClient({**config, **extra})
    try:
        return set(admin.list_topics(timeout=_PROBE_S).brokers)
    except KafkaException:
        return set()
