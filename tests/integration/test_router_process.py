"""`modelyard router` as its own process, following the real control topic while traffic flows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Message, Producer
from modelyard.api.pipeline.v1 import pipeline_pb2 as pb
from modelyard.api.pipeline.v1 import pipeline_pb2_grpc as pb_grpc
from modelyard.control import CanaryChange, GuardRule, GuardsChange, Rollback, Rollout
from modelyard.control.topic import read_records, read_state, write_change
from modelyard.repository.build import BuildContext
from modelyard.topics import pipeline_ingress_topic, pipeline_results_topic
from modelyard.wire import Envelope, decode_envelope, encode_envelope

from tests.support.kafka_io import Collector
from tests.support.keys import admin, verifier, writer
from tests.support.models import write_broken_version, write_shout_version
from tests.support.stage import RouterProcess, StageProcess

pytestmark = pytest.mark.integration

SPEC = """
pipeline: tp
version: 1
inputs: {text: {datatype: BYTES, shape: [-1]}}
stages:
  first: {model: shout, inputs: {text: request.text}}
  second: {model: shout, inputs: {text: first.shout}}
outputs: {loud: second.shout}
"""
PARTITIONS = 2


@dataclass
class Running:
    bootstrap: str
    prefix: str
    router: RouterProcess
    grpc: str = ""

    def change(self, change: object) -> None:
        write_change(self.bootstrap, "tp", change, signer=admin(), prefix=self.prefix)  # type: ignore[arg-type]

    def send(self, producer: Producer, ids: list[str]) -> None:
        topic = pipeline_ingress_topic(self.prefix, "tp")
        for rid in ids:
            producer.produce(topic, encode_envelope(Envelope(rid, {"text": [rid]})), rid)
        producer.flush(30)


@pytest.fixture(scope="module")
def running(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = Path(tmp_path_factory.mktemp("models"))
    ctx = BuildContext(root=root, cache=root / ".cache")
    for version in ("1", "2"):
        write_shout_version(ctx, version)
    write_broken_version(ctx, "9")
    spec = root / "tp.yaml"
    spec.write_text(SPEC)
    prefix = f"rp-{uuid.uuid4().hex[:8]}"
    for stage, version in (("first", "1"), ("second", "1"), ("second", "2")):
        write_change(
            broker, "tp", Rollout(stage=stage, version=version), signer=admin(), prefix=prefix
        )
    common = ("--bootstrap", broker, "--topic-prefix", prefix)
    stages = [StageProcess(f"shout:{v}", root, *common, "--no-grpc") for v in ("1", "2", "9")]
    router = RouterProcess(str(spec), root, *common, "--partitions", str(PARTITIONS),
                           "--canary-key", "request")  # fmt: skip
    try:
        for process in stages:
            process.wait_ready(90)
        yield Running(broker, prefix, router, router.wait_ready(90)["grpc"])
    finally:
        assert router.terminate() == 0, "\n".join(router.lines[-20:])
        for stage in stages:
            stage.terminate()


def _results(running: Running, ids: set[str], timeout: float = 60) -> dict[str, Envelope]:
    topic = pipeline_results_topic(running.prefix, "tp")
    collector = Collector(running.bootstrap, topic, PARTITIONS)

    def have(ms: list[Message]) -> bool:
        return ids <= {m.key().decode() for m in ms}

    try:
        messages = collector.until(have, timeout)
    finally:
        collector.close()
    return {
        m.key().decode(): decode_envelope(m.value()) for m in messages if m.key().decode() in ids
    }


def test_per_stage_rollback_under_traffic_loses_nothing_and_leaves_other_stages(
    running: Running,
) -> None:
    producer = Producer({"bootstrap.servers": running.bootstrap, "linger.ms": 5})
    before = [f"rb-a{i}" for i in range(50)]
    running.send(producer, before)
    assert {r.served_by["second"] for r in _results(running, set(before)).values()} == {"shout:2"}
    during = [f"rb-d{i}" for i in range(150)]
    running.send(producer, during)
    running.change(Rollback(stage="second"))  # while those are being routed
    switched, batch = None, 0
    while switched is None:  # keep traffic flowing until a request is served by the old version
        ids = [f"rb-b{batch}-{i}" for i in range(20)]
        running.send(producer, ids)
        got = _results(running, set(ids))
        switched = next((rid for rid in ids if got[rid].served_by["second"] == "shout:1"), None)
        batch += 1
        assert batch < 50, "the rollback never took effect"
    after = [f"rb-c{i}" for i in range(100)]
    running.send(producer, after)
    everything = (
        set(before) | set(after) | {f"rb-b{b}-{i}" for b in range(batch) for i in range(20)}
    )
    results = _results(running, everything)
    assert set(results) == everything  # none lost
    assert all(r.error is None for r in results.values())
    assert {r.served_by["first"] for r in results.values()} == {"shout:1"}  # untouched
    assert {results[rid].served_by["second"] for rid in after} == {"shout:1"}
    running.change(Rollout(stage="second", version="2"))  # back to the module's start


def test_canary_split_is_within_tolerance_of_its_weight(running: Running) -> None:
    running.change(CanaryChange(stage="first", version="2", weight=0.25))
    producer = Producer({"bootstrap.servers": running.bootstrap, "linger.ms": 5})
    probe, batch = None, 0
    while probe is None:  # the router follows the control topic: wait until it routes a canary
        ids = [f"cp-{batch}-{i}" for i in range(20)]
        running.send(producer, ids)
        got = _results(running, set(ids))
        probe = next((rid for rid in ids if got[rid].served_by["first"] == "shout:2"), None)
        batch += 1
        assert batch < 50, "the canary never took effect"
    ids = [f"canary-{i}" for i in range(400)]
    running.send(producer, ids)
    results = _results(running, set(ids))
    share = sum(r.served_by["first"] == "shout:2" for r in results.values()) / len(ids)
    assert share == pytest.approx(0.25, abs=0.07)  # 3.2 standard deviations of a fair draw
    assert {r.served_by["second"] for r in results.values()} == {"shout:2"}
    running.change(CanaryChange(stage="first", version=None))


def test_grpc_infer_and_stream_through_the_router(running: Running) -> None:
    with grpc.insecure_channel(running.grpc) as channel:
        stub = pb_grpc.PipelineServiceStub(channel)
        text = pb.Tensor(name="text", datatype="BYTES", shape=[1], bytes_contents=[b"grpc hi"])
        request = pb.InferRequest(id="grpc-1", pipeline="tp", inputs=[text])
        metadata = [("x-modelyard-caller", "carol")]
        response = stub.Infer(request, metadata=metadata, timeout=60)
        assert response.id == "grpc-1"
        assert not response.error.code
        [loud] = response.outputs
        assert (loud.name, list(loud.bytes_contents)) == ("loud", [b"GRPC HI"])
        assert dict(response.served_by) == {"first": "shout:1", "second": "shout:2"}
        events = list(stub.InferStream(pb.InferRequest(id="grpc-2", pipeline="tp", inputs=[text]),
                                       metadata=metadata, timeout=60))  # fmt: skip
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["stage", "stage", "result"]
    assert [e.stage.stage for e in events[:2]] == ["first", "second"]
    assert list(events[0].stage.outputs[0].bytes_contents) == [b"GRPC HI"]
    assert events[2].result.served_by["second"] == "shout:2"


def test_grpc_error_result_is_a_grpc_status(running: Running) -> None:
    with grpc.insecure_channel(running.grpc) as channel:
        stub = pb_grpc.PipelineServiceStub(channel)
        boom = pb.Tensor(name="text", datatype="BYTES", shape=[1], bytes_contents=[b"boom"])
        with pytest.raises(grpc.RpcError) as raised:
            stub.Infer(pb.InferRequest(id="grpc-boom", pipeline="tp", inputs=[boom]), timeout=60)
    assert raised.value.code() == grpc.StatusCode.INTERNAL  # a model error, by errors.POLICY
    assert "first" in (raised.value.details() or "")


def test_a_guard_rolls_a_failing_canary_back_by_itself(running: Running) -> None:
    rule = GuardRule(metric="error_rate", max=0.2, window_s=60, min_requests=10)
    running.change(GuardsChange(stage="first", rules=(rule,)))
    running.change(CanaryChange(stage="first", version="9", weight=0.5))  # a broken release
    producer = Producer({"bootstrap.servers": running.bootstrap, "linger.ms": 5})
    tripped, batch = None, 0
    while tripped is None:  # traffic until the router writes its rollback
        ids = [f"guard-{batch}-{i}" for i in range(20)]
        running.send(producer, ids)
        _results(running, set(ids))
        records = read_records(running.bootstrap, prefix=running.prefix, verifier=verifier())
        # signed by the router's writer key, and accepted as a guard's retreat
        accepted = [p.record for p in records if p.rejected is None]
        tripped = next((r for r in accepted if r.actor == writer().name), None)
        batch += 1
        assert batch < 30, "the guard never tripped"
    assert tripped.change == CanaryChange(stage="first", version=None)
    assert "error_rate" in tripped.reason
    assert read_state(running.bootstrap, prefix=running.prefix).stage("tp", "first").canary is None
    clean = False
    while not clean:  # the router follows its own record: the broken canary gets nothing more
        ids = [f"after-guard-{batch}-{i}" for i in range(20)]
        running.send(producer, ids)
        results = _results(running, set(ids)).values()
        clean = all(r.error is None and r.served_by["first"] == "shout:1" for r in results)
        batch += 1
        assert batch < 60, "requests still reach the rolled-back canary"
    running.change(GuardsChange(stage="first", rules=()))
