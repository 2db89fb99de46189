"""Triton's extensions as a stage answers them: its manifest as a model configuration, and the
statistics its hook keeps (``modelyard.stage.grpc_triton``, ``modelyard.stage.statistics``)."""

from __future__ import annotations

import time

from google.protobuf.json_format import MessageToDict
from modelyard.api.oip.v2 import grpc_service_pb2 as pb
from modelyard.repository.manifest import Batching, Manifest
from modelyard.stage.grpc_triton import model_config, model_statistics, repository_entry
from modelyard.stage.statistics import StageStatistics
from modelyard.telemetry.hooks import RequestContext
from modelyard.tensors import TensorSpec


def manifest(*, batched: bool) -> Manifest:
    lead = (-1,) if batched else ()
    return Manifest(
        name="tagger",
        version="2",
        runtime="onnx",
        inputs=(
            TensorSpec(name="tokens", datatype="INT64", shape=(*lead, 16)),
            TensorSpec(name="lang", datatype="BYTES", shape=(*lead, 1), optional=True),
        ),
        outputs=(TensorSpec(name="tags", datatype="FP32", shape=(*lead, 16, -1)),),
        batching=Batching(max_batch_size=8, max_wait_ms=2.5),
    )


def test_a_leading_variable_axis_is_the_batch_axis() -> None:
    config = model_config(manifest(batched=True))
    assert (config.name, config.platform, config.backend) == ("tagger", "onnx", "onnx")
    assert config.max_batch_size == 8
    assert config.dynamic_batching.max_queue_delay_microseconds == 2500
    assert [(i.name, i.data_type, list(i.dims), i.optional) for i in config.input] == [
        ("tokens", pb.TYPE_INT64, [16], False),
        ("lang", pb.TYPE_STRING, [1], True),
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("tags", pb.TYPE_FP32, [16, -1])
    ]


def test_without_a_batch_axis_the_shapes_are_whole() -> None:
    config = model_config(manifest(batched=False))
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert [list(i.dims) for i in config.input] == [[16], [1]]


def test_a_vector_model_has_no_batch_axis() -> None:
    """Triton's dims cannot be empty: a [-1] vector is the whole shape, perf_analyzer --shape."""
    vector = Manifest(
        name="noop",
        version="1",
        runtime="python",
        inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1,)),),
        outputs=(TensorSpec(name="y", datatype="FP32", shape=(-1,)),),
    )
    config = model_config(vector)
    assert config.max_batch_size == 0
    assert [list(i.dims) for i in config.input] == [[-1]]


def request(age_s: float) -> RequestContext:
    return RequestContext("r", "grpc", received_at=time.monotonic() - age_s)


def test_statistics_count_requests_and_batches() -> None:
    stats = StageStatistics()
    batch = [request(0.010), request(0.020)]
    stats.batch_finished(batch, 0.004, None)
    stats.requests_finished(batch, ["ok", "ok"], time.monotonic())
    failed = [request(0.0)]
    stats.batch_finished(failed, 0.001, ValueError("the batch failed"))  # re-run alone
    stats.request_finished(failed[0], "model", 0.002)
    snap = stats.snapshot()
    assert (snap.inference_count, snap.execution_count) == (2, 1)
    assert snap.success.count == 2
    assert snap.success.ns >= 30_000_000
    assert (snap.fail.count, snap.fail.ns) == (1, 2_000_000)
    assert snap.queue.count == 2  # arrival to the batch's start, successful batches only
    assert snap.queue.ns >= 30_000_000 - 2 * 4_000_000
    assert (snap.compute.count, snap.compute.ns) == (2, 8_000_000)  # the batch's time, each
    assert {k: (v.count, v.ns) for k, v in snap.batches.items()} == {2: (1, 4_000_000)}
    assert abs(snap.last_inference_ms - time.time() * 1000) < 5_000


def test_statistics_as_triton_reports_them() -> None:
    stats = StageStatistics()
    batch = [request(0.010)]
    stats.batch_finished(batch, 0.003, None)
    stats.request_finished(batch[0], "ok", 0.005)
    message = model_statistics(manifest(batched=True), stats.snapshot())
    reported = MessageToDict(message)
    assert (reported["name"], reported["version"]) == ("tagger", "2")
    assert (reported["inferenceCount"], reported["executionCount"]) == ("1", "1")
    inference = reported["inferenceStats"]
    assert inference["success"] == {"count": "1", "ns": "5000000"}
    assert inference["computeInfer"] == {"count": "1", "ns": "3000000"}
    assert inference["computeInput"] == {"count": "1"}  # part of the model's time: 0 ns
    assert reported["batchStats"] == [
        {
            "batchSize": "1",
            "computeInput": {"count": "1"},
            "computeInfer": {"count": "1", "ns": "3000000"},
            "computeOutput": {"count": "1"},
        }
    ]


def test_repository_entry_states() -> None:
    ready = repository_entry(manifest(batched=True), True)
    assert (ready.name, ready.version, ready.state, ready.reason) == ("tagger", "2", "READY", "")
    assert repository_entry(manifest(batched=True), False).state == "UNAVAILABLE"
