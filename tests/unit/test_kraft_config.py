"""What an Apache Kafka node is started with (no JVM here: the rendering only)."""

from __future__ import annotations

from pathlib import Path

from modelyard.broker.kraft_config import (
    KraftNode,
    java_command,
    new_cluster_id,
    server_properties,
)
from modelyard.kafka.config import MAX_MESSAGE_BYTES


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def _nodes(count: int) -> list[KraftNode]:
    return [KraftNode(i, "127.0.0.1", 9000 + i, 9100 + i) for i in range(1, count + 1)]


def test_cluster_ids_are_kafka_uuids_the_storage_tool_takes() -> None:
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_one_node_replicates_nothing_and_takes_modelyard_records(tmp_path: Path) -> None:
    (node,) = _nodes(1)
    props = _props(server_properties(node, [node], tmp_path))
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9101"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9001"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["message.max.bytes"] == props["replica.fetch.max.bytes"] == str(MAX_MESSAGE_BYTES)
    assert props["log.dirs"] == str(tmp_path)


def test_three_nodes_replicate_three_ways_with_two_in_sync(tmp_path: Path) -> None:
    nodes = _nodes(3)
    props = _props(server_properties(nodes[1], nodes, tmp_path))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"].split(",") == [n.voter for n in nodes]
    assert props["default.replication.factor"] == props["offsets.topic.replication.factor"] == "3"
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"


def test_java_loads_or_records_a_class_archive(tmp_path: Path) -> None:
    jsa = tmp_path / "k.jsa"
    loads = java_command(tmp_path, "kafka.Kafka", "x.properties", archive=jsa)
    records = java_command(tmp_path, "kafka.Kafka", write_archive=jsa)
    assert f"-XX:SharedArchiveFile={jsa}" in loads
    assert f"-XX:ArchiveClassesAtExit={jsa}" in records
    assert loads[-4:] == ["-cp", f"{tmp_path}/*", "kafka.Kafka", "x.properties"]
