"""Security at the broker: SASL/SCRAM-SHA-512 listeners and the ACLs `modelyard acls` computes.

Apache Kafka only (the embedded broker has neither SASL nor ACLs): one secured KRaft node for the
module, on loopback with SASL_PLAINTEXT (SCRAM exchanges never send a password, but records are
not encrypted: production adds TLS, SASL_SSL). Every allowed read and write of the ACL table is
tried and works; every forbidden one is tried and refused by the broker; clients without
credentials or with a wrong password are refused; a real `modelyard serve` runs as its own
principal, serves a request and is refused where it has no right to write.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from modelyard.broker import KafkaCluster, create_topics
from modelyard.broker.acls import READER_GROUPS, PipelinePrincipals, apply_acls, pipeline_acls
from modelyard.broker.kraft_security import SaslScram
from modelyard.repository.build import BuildContext
from modelyard.topics import (
    audit_topic,
    control_topic,
    model_dlq_topic,
    model_group,
    model_input_topic,
    model_reply_topic,
    pipeline_topics,
    router_group,
)
from modelyard_langid.build import build as build_langid

from tests.integration.conftest import KAFKA_LIB, MODEL_CACHE
from tests.support.stage import StageProcess
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.own_brokers]

P, PIPE = "yard", "sec"  # topic prefix, pipeline
MODEL, VERSION = "langid", "2"
PASSWORDS = {"router": "router-pw", "langid": "langid-pw", "ops": "ops-pw", "intruder": "in-pw"}
INGRESS, INBOX, OUT, DLQ, SHADOW = pipeline_topics(P, PIPE)
STAGE_IN = model_input_topic(P, MODEL, VERSION)
STAGE_REPLIES, STAGE_DLQ = model_reply_topic(P, MODEL, VERSION), model_dlq_topic(P, MODEL, VERSION)
OTHER_IN = model_input_topic(P, MODEL, "1")  # a version the stage principal is not
CONTROL, AUDIT = control_topic(P), audit_topic(P)
GW_REPLIES = f"{P}.gw.test"
STAGE_GROUP, ROUTER_GROUP = model_group(P, MODEL, VERSION), router_group(P, PIPE)
TOPICS = [
    *pipeline_topics(P, PIPE),
    STAGE_IN,
    OTHER_IN,
    STAGE_REPLIES,
    STAGE_DLQ,
    AUDIT,
    GW_REPLIES,
]
TOPIC_DENIED = KafkaError.TOPIC_AUTHORIZATION_FAILED
GROUP_DENIED = KafkaError.GROUP_AUTHORIZATION_FAILED


@dataclass(frozen=True)
class Secured:
    cluster: KafkaCluster

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    def config(self, user: str | None, **more: Any) -> dict[str, Any]:
        """A client logged in as ``user`` (the super user when None), quiet."""
        return {"bootstrap.servers": self.bootstrap, "log_level": 0,
                **self.cluster.client_config(user), **more}  # fmt: skip


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A SCRAM-secured node with the pipeline's topics (one record each) and its ACLs."""
    security = SaslScram(users=PASSWORDS)
    data = tmp_path_factory.mktemp("kafka-secured")
    with KafkaCluster(lib=KAFKA_LIB, data_dir=data, security=security) as cluster:
        env = Secured(cluster)
        admin = cluster.client_config()
        create_topics(env.bootstrap, TOPICS, partitions=1, kafka=admin)
        create_topics(env.bootstrap, [CONTROL], config={"cleanup.policy": "compact"}, kafka=admin)
        seed = Producer(env.config(None))
        for topic in [*TOPICS, CONTROL]:
            seed.produce(topic, b"seed", key=b"seed")
        assert seed.flush(30) == 0
        who = PipelinePrincipals("User:router", {(MODEL, VERSION): "User:langid"}, ["User:ops"])
        apply_acls(env.bootstrap, pipeline_acls(PIPE, who, P), admin)
        _wait_until_allowed(env)
        yield env


def _wait_until_allowed(env: Secured) -> None:
    """ACLs reach the broker through the metadata log: until the router may see its ingress."""
    admin = AdminClient(env.config("router"))

    def ingress_visible() -> bool:
        topics = admin.list_topics(timeout=5).topics
        return INGRESS in topics and topics[INGRESS].error is None

    wait_until(ingress_visible, "the router's ACLs to take effect", 30)


# the broker's answer to one read or write -------------------------------------------------
def produce(env: Secured, user: str, topic: str, value: bytes = b"v", **kw: Any) -> int | None:
    """The error code the broker gave a produce by ``user`` to ``topic``, or None (delivered)."""
    producer = Producer(env.config(user, **{"message.timeout.ms": 15000}))
    results: list[KafkaError | None] = []
    kw.setdefault("key", b"k")  # the control topic is compacted: every record needs a key
    producer.produce(topic, value, on_delivery=lambda err, _msg: results.append(err), **kw)
    producer.flush(30)
    assert results, f"no delivery report for {topic}"
    return results[0].code() if results[0] is not None else None


def consume(env: Secured, user: str, topic: str, group: str | None = None) -> int | Message:
    """The first record ``user`` reads from ``topic`` (in ``group``, or assigned, as modelyard's
    readers do: naming a group they never join), or the error code the broker answered with."""
    consumer = Consumer(env.config(user, **{
        "group.id": group or f"{READER_GROUPS}test-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "session.timeout.ms": 6000,
    }))  # fmt: skip
    if group is None:
        consumer.assign([TopicPartition(topic, 0, 0)])
    else:
        consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is None:
                return msg
            # without a group of its own (assign), a refused coordinator lookup of the group
            # librdkafka names anyway is noise: the fetch goes on and meets the topic's ACLs
            if error.code() == GROUP_DENIED and group is None:
                continue
            if error.code() != KafkaError._PARTITION_EOF:
                return int(error.code())
        raise AssertionError(f"{user} got neither a record nor a refusal from {topic}")
    finally:
        consumer.close()


# the table ---------------------------------------------------------------------------------
ALLOWED_WRITES = [
    ("router", STAGE_IN), ("router", OUT), ("router", DLQ), ("router", SHADOW), ("router", AUDIT),
    ("router", GW_REPLIES), ("langid", INBOX), ("langid", SHADOW),
    ("langid", STAGE_REPLIES), ("langid", STAGE_DLQ),
    ("ops", CONTROL), ("router", CONTROL),  # the router: signed guard rollbacks (the keyring)
]  # fmt: skip
FORBIDDEN_WRITES = [
    ("router", INGRESS), ("router", INBOX),
    ("langid", CONTROL), ("langid", OUT), ("langid", DLQ), ("langid", AUDIT), ("langid", OTHER_IN),
    ("langid", STAGE_IN), ("langid", GW_REPLIES), ("intruder", INGRESS), ("intruder", CONTROL),
]  # fmt: skip
ALLOWED_READS = [
    ("router", INGRESS, ROUTER_GROUP), ("router", INBOX, ROUTER_GROUP), ("router", CONTROL, None),
    ("langid", STAGE_IN, STAGE_GROUP), ("ops", CONTROL, None),
]  # fmt: skip
FORBIDDEN_READS = [
    ("router", STAGE_IN, ROUTER_GROUP, TOPIC_DENIED), ("router", OUT, ROUTER_GROUP, TOPIC_DENIED),
    ("router", STAGE_IN, None, TOPIC_DENIED), ("router", INGRESS, STAGE_GROUP, GROUP_DENIED),
    ("langid", INGRESS, STAGE_GROUP, TOPIC_DENIED), ("langid", CONTROL, STAGE_GROUP, TOPIC_DENIED),
    ("langid", OTHER_IN, STAGE_GROUP, TOPIC_DENIED), ("langid", INBOX, STAGE_GROUP, TOPIC_DENIED),
    ("langid", STAGE_IN, ROUTER_GROUP, GROUP_DENIED),
    ("intruder", OUT, ROUTER_GROUP, TOPIC_DENIED), ("intruder", CONTROL, STAGE_GROUP, TOPIC_DENIED),
]  # fmt: skip


def _id(case: tuple[Any, ...]) -> str:
    return "-".join(str(part) for part in case if part is not None and not isinstance(part, int))


@pytest.mark.parametrize(("user", "topic"), ALLOWED_WRITES, ids=map(_id, ALLOWED_WRITES))
def test_allowed_write_is_delivered(secured: Secured, user: str, topic: str) -> None:
    assert produce(secured, user, topic) is None


@pytest.mark.parametrize(("user", "topic"), FORBIDDEN_WRITES, ids=map(_id, FORBIDDEN_WRITES))
def test_forbidden_write_is_refused(secured: Secured, user: str, topic: str) -> None:
    assert produce(secured, user, topic) == TOPIC_DENIED


@pytest.mark.parametrize(("user", "topic", "group"), ALLOWED_READS, ids=map(_id, ALLOWED_READS))
def test_allowed_read_gets_records(
    secured: Secured, user: str, topic: str, group: str | None
) -> None:
    msg = consume(secured, user, topic, group)
    assert isinstance(msg, Message), KafkaError(msg)
    assert msg.topic() == topic


@pytest.mark.parametrize(
    ("user", "topic", "group", "code"), FORBIDDEN_READS, ids=map(_id, FORBIDDEN_READS)
)
def test_forbidden_read_is_refused(
    secured: Secured, user: str, topic: str, group: str | None, code: int
) -> None:
    got = consume(secured, user, topic, group)
    if user == "intruder":  # neither the topic nor the group: whichever the broker checks first
        assert got in {TOPIC_DENIED, GROUP_DENIED}
    else:
        assert got == code


# who may connect at all --------------------------------------------------------------------
def _connect_errors(env: Secured, config: dict[str, Any]) -> tuple[bool, list[KafkaError]]:
    """Whether a metadata request succeeds with ``config``, and the errors the client saw."""
    errors: list[KafkaError] = []
    admin = AdminClient({**config, "error_cb": errors.append, "log_level": 0})
    try:
        admin.list_topics(timeout=5)
    except KafkaException as exc:
        admin.poll(1)  # serves error_cb: why the broker could not be reached
        errors.append(exc.args[0])
        return False, errors
    return True, errors


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param({"sasl.password": "wrong"}, id="bad-password"),
        pytest.param({"sasl.username": "nobody", "sasl.password": "x"}, id="unknown-user"),
    ],
)
def test_wrong_credentials_are_refused(secured: Secured, credentials: dict[str, str]) -> None:
    ok, errors = _connect_errors(secured, secured.config("router", **credentials))
    assert not ok
    assert KafkaError._AUTHENTICATION in {e.code() for e in errors}, errors


def test_client_without_credentials_is_refused(secured: Secured) -> None:
    ok, _ = _connect_errors(secured, {"bootstrap.servers": secured.bootstrap})
    assert not ok  # the SASL listener closes a connection that does not authenticate first


def test_client_with_credentials_connects(secured: Secured) -> None:
    ok, errors = _connect_errors(secured, secured.config("intruder"))
    assert ok, errors  # authenticated; the ACLs, not the listener, keep it out


# a real stage under its own principal ------------------------------------------------------
@pytest.fixture(scope="module")
def langid_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("langid-models")
    build_langid(BuildContext(root=root, cache=MODEL_CACHE))
    return root


def _request(rid: str, text: str) -> bytes:
    tensor = {"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}
    return json.dumps({"id": rid, "inputs": [tensor]}).encode()


def _send(env: Secured, rid: str, text: str, reply_to: str) -> None:
    headers = [("content-type", b"application/json"), ("reply-to", reply_to.encode())]
    value = _request(rid, text)
    assert produce(env, "router", STAGE_IN, value, key=rid.encode(), headers=headers) is None


def _reply(env: Secured, rid: str) -> dict[str, Any]:
    """The stage's reply to ``rid`` on the router's inbox, read as the router."""
    consumer = Consumer(env.config("router", **{
        "group.id": ROUTER_GROUP, "auto.offset.reset": "earliest", "enable.auto.commit": False,
    }))  # fmt: skip
    consumer.subscribe([INBOX])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.key() == rid.encode():
                reply: dict[str, Any] = json.loads(msg.value() or b"")
                return reply
        raise AssertionError(f"no reply to {rid}")
    finally:
        consumer.close()


def test_stage_serves_under_its_principal_and_is_refused_elsewhere(
    secured: Secured, langid_repo: Path, tmp_path: Path
) -> None:
    client = secured.config("langid")
    config = {k: client[k] for k in ("security.protocol", "sasl.mechanism", "sasl.username")}
    env = {"MODELYARD_KAFKA_CONFIG": json.dumps(config),
           "MODELYARD_KAFKA_SASL_PASSWORD": PASSWORDS["langid"]}  # fmt: skip
    stage = StageProcess(f"{MODEL}:{VERSION}", langid_repo, "--bootstrap", secured.bootstrap,
                         "--no-grpc", "--state-dir", str(tmp_path), env=env)  # fmt: skip
    try:
        stage.wait_ready(60)
        _send(secured, "forbidden-1", "bonjour tout le monde", reply_to=OUT)  # not its to write
        _send(secured, "allowed-1", "bonjour tout le monde, comment allez-vous", reply_to=INBOX)
        reply = _reply(secured, "allowed-1")
        assert reply["id"] == "allowed-1"
        assert reply["outputs"][0]["data"] == ["fr"]
        assert stage.proc.poll() is None  # a refused reply-to does not stop the stage
    finally:
        code = stage.terminate()
    output = "\n".join(stage.lines)
    assert code == 0, output
    assert "TOPIC_AUTHORIZATION_FAILED" in output or "authorization" in output.lower(), output
    assert PASSWORDS["langid"] not in output  # the secret is never logged
