"""What an Apache Kafka KRaft node is started with: the jars, the JVM command, server.properties.

Every node is broker and controller in one JVM (combined mode) with a static controller quorum:
one node for a machine or a test session, N nodes (replication factor and ``min.insync.replicas``
as production clusters set them) for broker-fault tests.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from modelyard.broker.kraft_security import SaslScram
from modelyard.kafka.config import MAX_MESSAGE_BYTES

__all__ = [
    "KAFKA_VERSION",
    "LOG4J2_XML",
    "KraftNode",
    "class_archive",
    "default_kafka_lib",
    "java_command",
    "new_cluster_id",
    "server_properties",
]

# The version broker/kafka/pom.xml pins and scripts/setup.sh fetches into .cache/kafka/<v>/lib.
KAFKA_VERSION = "4.4.0"
# Kafka's own default heap is 1 GiB; a test node needs far less, and CI machines have 2 cores.
_JVM_OPTIONS = (
    "-Xms128m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
)  # fmt: skip
# Warnings and errors only: a node's log stays a few lines unless something goes wrong. No log4j
# shutdown hook: it would stop logging before Kafka's own hook logs the shutdown.
LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <Console name="out" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Logger name="kafka.server.BrokerServer" level="INFO"/>
    <Logger name="kafka.server.ControllerServer" level="INFO"/>
    <!-- nodes of a cluster start side by side and find their peers not listening yet -->
    <Logger name="org.apache.kafka.clients.NetworkClient" level="ERROR"/>
    <Root level="WARN"><AppenderRef ref="out"/></Root>
  </Loggers>
</Configuration>
"""


def default_kafka_lib() -> Path:
    """Where ``make setup`` puts the jars, relative to the working directory (the repo root)."""
    return Path(".cache") / "kafka" / KAFKA_VERSION / "lib"


def new_cluster_id() -> str:
    """A random cluster id as Kafka makes one: a UUID in URL-safe base64, unpadded, never
    starting with ``-`` (the storage tool's command line would take it for an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def class_archive(lib: Path, main_class: str) -> Path | None:
    """Where ``main_class``'s class-data-sharing archive lives, next to ``lib``: one per Java
    build (an archive only loads into the JVM that wrote it). None when ``lib``'s folder is not
    writable or there is no ``java``.

    A JVM started with the archive loads Kafka's classes from it: a node's start takes a few
    seconds less. The first start writes it (see :func:`java_command`)."""
    java = shutil.which("java")
    if java is None or not os.access(lib.resolve().parent, os.W_OK):
        return None
    real = Path(java).resolve()
    stat = real.stat()
    build = hashlib.sha256(f"{real}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return lib.resolve().parent / "cds" / f"{main_class}-{build}.jsa"


def java_command(
    lib: Path,
    main_class: str,
    *args: str,
    log_config: Path | None = None,
    archive: Path | None = None,
    write_archive: Path | None = None,
) -> list[str]:
    """``java`` running ``main_class`` with every jar in ``lib`` on the classpath, loading classes
    from ``archive`` or recording them into ``write_archive`` at exit (a clean exit: SIGTERM
    is one, SIGKILL is not)."""
    options = [*_JVM_OPTIONS, "-Xlog:cds*=off"]  # an unusable archive is ignored in silence
    if log_config is not None:
        options.append(f"-Dlog4j2.configurationFile={log_config}")
    if archive is not None:
        options.append(f"-XX:SharedArchiveFile={archive}")
    elif write_archive is not None:
        options.append(f"-XX:ArchiveClassesAtExit={write_archive}")
    return ["java", *options, "-cp", f"{lib.resolve()}/*", main_class, *args]


@dataclass(frozen=True)
class KraftNode:
    """One combined broker-and-controller node: its id and loopback ports."""

    node_id: int
    host: str
    port: int  # clients (PLAINTEXT)
    controller_port: int

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def voter(self) -> str:
        return f"{self.node_id}@{self.host}:{self.controller_port}"


def server_properties(
    node: KraftNode, nodes: list[KraftNode], log_dir: Path, security: SaslScram | None = None
) -> str:
    """server.properties of ``node`` in a cluster of ``nodes`` (which include it); with
    ``security``, SASL/SCRAM listeners and ACLs instead of PLAINTEXT open to all."""
    size = len(nodes)
    replicas, min_isr = min(3, size), min(2, size)
    listener = security.listener if security is not None else "PLAINTEXT"
    settings: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": ",".join(n.voter for n in nodes),
        "listeners": f"{listener}://{node.bootstrap},CONTROLLER://{node.host}:{node.controller_port}",
        "advertised.listeners": f"{listener}://{node.bootstrap}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": log_dir,
        # like the embedded broker: produce to an unknown topic creates it, with 4 partitions
        "auto.create.topics.enable": "true",
        "num.partitions": 4,
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": 8,  # created on the first group: 50 would cost seconds
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 8,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": 0,  # a test's first consumer gets partitions at once
        # modelyard's records go up to MAX_MESSAGE_BYTES (each topic it creates says so);
        # auto-created topics and replication take the same
        "message.max.bytes": MAX_MESSAGE_BYTES,
        "replica.fetch.max.bytes": MAX_MESSAGE_BYTES,
        "num.network.threads": 2,
        "num.io.threads": 4,
    }
    if security is not None:
        settings.update(security.server_settings())
    return "".join(f"{key}={value}\n" for key, value in settings.items())
