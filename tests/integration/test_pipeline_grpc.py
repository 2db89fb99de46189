"""PipelineService on loopback, called through a real channel with the generated stub.

Behind it: a real PipelineGateway and the fake router on the embedded broker, so every call
crosses Kafka exactly as it would in front of the real router.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from modelyard.api.pipeline.v1 import pipeline_pb2 as pb
from modelyard.api.pipeline.v1 import pipeline_pb2_grpc as pb_grpc
from modelyard.gateway import PipelineGateway, TokenPrincipals, start_pipeline_grpc
from modelyard.gateway.servicer import ERROR_CODE_KEY, ERROR_STAGE_KEY, REQUEST_ID_KEY
from modelyard.gateway.tensors import from_proto
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.support.aio import LoopThread
from tests.support.fake_router import SERVED_BY, FakeRouter, running_fake_router

pytestmark = pytest.mark.integration

PIPELINE = "echo"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TOKENS = {"s3cret": "svc-billing"}


@dataclass
class Served:
    router: FakeRouter
    stub: pb_grpc.PipelineServiceStub
    traced: pb_grpc.PipelineServiceStub  # the same gateway, behind a server with tracing on
    spans: InMemorySpanExporter

    def seen(self, request_id: str) -> dict[str, str]:
        (found,) = [s for s in self.router.seen if s.envelope.request_id == request_id]
        return {"caller": found.envelope.caller or "", **found.headers}


@pytest.fixture(scope="module")
def served(broker: str) -> Iterator[Served]:
    """One fake router, gateway and gRPC server for the module (unique request ids per test)."""
    prefix = f"t-grpc-{uuid.uuid4().hex[:8]}"
    loop = LoopThread()
    with running_fake_router(broker, prefix, PIPELINE) as router:
        gateway = PipelineGateway(broker, topic_prefix=prefix, reply_grace_s=0.05)
        loop.run(gateway.start())
        principals = TokenPrincipals(TOKENS)
        server, port = loop.run(start_pipeline_grpc(gateway, "127.0.0.1", 0, principal=principals))
        spans, provider = InMemorySpanExporter(), TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        traced, traced_port = loop.run(
            start_pipeline_grpc(gateway, "127.0.0.1", 0, tracer_provider=provider)
        )
        try:
            with (
                grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
                grpc.insecure_channel(f"127.0.0.1:{traced_port}") as traced_channel,
            ):
                yield Served(
                    router,
                    pb_grpc.PipelineServiceStub(channel),
                    pb_grpc.PipelineServiceStub(traced_channel),
                    spans,
                )
        finally:
            loop.run(server.stop(1.0))
            loop.run(traced.stop(1.0))
            loop.run(gateway.close())
            loop.close()


def request(*texts: bytes, request_id: str = "", timeout_ms: int = 0) -> pb.InferRequest:
    tensor = pb.Tensor(name="text", datatype="BYTES", shape=[len(texts)], bytes_contents=texts)
    return pb.InferRequest(id=request_id, pipeline=PIPELINE, inputs=[tensor], timeout_ms=timeout_ms)


def outputs(tensors: list[pb.Tensor]) -> dict[str, list[object]]:
    return {t.name: from_proto(t).tolist() for t in tensors}


def rid() -> str:
    return uuid.uuid4().hex


def test_infer_returns_outputs_served_by_and_ids(served: Served) -> None:
    request_id = rid()
    metadata = [
        ("traceparent", f"00-{TRACE_ID}-b7ad6b7169203331-01"),
        ("x-modelyard-caller", "bob"),
    ]
    response = served.stub.Infer(request(b"hey", request_id=request_id), metadata=metadata)
    assert response.id == request_id
    assert outputs(list(response.outputs)) == {"upper": [b"HEY"], "length": [3]}
    assert dict(response.served_by) == SERVED_BY
    assert not response.HasField("error")
    assert response.trace_id == TRACE_ID  # the caller's trace continues through the router
    seen = served.seen(request_id)
    assert seen["caller"] == "bob"
    assert seen["traceparent"].split("-")[1] == TRACE_ID


def test_infer_generates_an_id_and_a_trace_when_none_is_given(served: Served) -> None:
    response = served.stub.Infer(request(b"x"))
    assert len(response.id) == 32
    assert len(response.trace_id) == 32
    assert served.seen(response.id)["caller"] == "anonymous"


def test_bearer_tokens_name_the_principal(served: Served) -> None:
    request_id = rid()
    served.stub.Infer(
        request(b"x", request_id=request_id), metadata=[("authorization", "Bearer s3cret")]
    )
    assert served.seen(request_id)["caller"] == "svc-billing"
    with pytest.raises(grpc.RpcError) as failed:
        served.stub.Infer(request(b"x"), metadata=[("authorization", "Bearer wrong")])
    assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_infer_stream_sends_stage_events_then_the_result(served: Served) -> None:
    events = list(served.stub.InferStream(request(b"ab", b"c")))
    assert [e.WhichOneof("event") for e in events] == ["stage", "stage", "result"]
    first = events[0].stage
    assert (first.stage, first.model, first.version) == ("upper", "upper", "1")
    assert outputs(list(first.outputs)) == {"upper": [b"AB", b"C"]}
    assert outputs(list(events[-1].result.outputs))["length"] == [2, 1]


def test_a_failed_request_ends_infer_with_its_status(served: Served) -> None:
    request_id = rid()
    with pytest.raises(grpc.RpcError) as failed:
        served.stub.Infer(request(b"boom", request_id=request_id))
    error = failed.value
    assert error.code() == grpc.StatusCode.INTERNAL  # a model error (errors.POLICY)
    assert "length cannot count" in error.details()
    trailing = dict(error.trailing_metadata())
    assert trailing[ERROR_CODE_KEY] == "model"
    assert trailing[ERROR_STAGE_KEY] == "length"
    assert trailing[REQUEST_ID_KEY] == request_id


def test_a_validation_error_is_invalid_argument(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        served.stub.Infer(request(b"invalid"))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(failed.value.trailing_metadata())[ERROR_CODE_KEY] == "validation"


def test_a_failed_stream_sends_the_result_then_its_status(served: Served) -> None:
    received: list[pb.InferEvent] = []
    with pytest.raises(grpc.RpcError) as failed:
        received.extend(served.stub.InferStream(request(b"boom")))
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert [e.WhichOneof("event") for e in received] == ["stage", "stage", "result"]
    assert received[1].stage.error.code == "model"
    assert received[-1].result.error.stage == "length"


def test_no_result_in_time_is_deadline_exceeded(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        served.stub.Infer(request(b"silent", timeout_ms=100))
    assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert dict(failed.value.trailing_metadata())[ERROR_CODE_KEY] == "deadline"


def test_the_callers_grpc_deadline_becomes_the_request_deadline(served: Served) -> None:
    request_id = rid()
    served.stub.Infer(request(b"x", request_id=request_id), timeout=20)
    (seen,) = [s for s in served.router.seen if s.envelope.request_id == request_id]
    assert seen.envelope.deadline_ms is not None
    # the call's 20 s, not the server's default 30 s (a wide margin: no timing assertion)
    assert seen.envelope.deadline_ms < (time.time() + 25) * 1000


def test_malformed_tensors_are_invalid_argument(served: Served) -> None:
    bad = pb.Tensor(name="x", datatype="FP32", shape=[2], raw_contents=b"\x00" * 5)
    cases = [
        pb.InferRequest(pipeline=PIPELINE, inputs=[bad]),
        pb.InferRequest(pipeline="", inputs=[]),
        pb.InferRequest(pipeline="bad.name", inputs=[]),
    ]
    for case in cases:
        with pytest.raises(grpc.RpcError) as failed:
            served.stub.Infer(case)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case


def test_numeric_inputs_cross_as_arrays(served: Served) -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = pb.Tensor(name="x", datatype="FP32", shape=[2, 3], raw_contents=values.tobytes())
    request_id = rid()
    served.stub.Infer(pb.InferRequest(id=request_id, pipeline=PIPELINE, inputs=[tensor]))
    (seen,) = [s for s in served.router.seen if s.envelope.request_id == request_id]
    np.testing.assert_array_equal(seen.envelope.fields["x"], values)


def test_with_tracing_on_each_call_is_a_server_span_the_router_continues(served: Served) -> None:
    served.spans.clear()
    request_id = rid()
    metadata = [("traceparent", f"00-{TRACE_ID}-b7ad6b7169203331-01")]
    response = served.traced.Infer(request(b"x", request_id=request_id), metadata=metadata)
    (span,) = served.spans.get_finished_spans()
    assert (span.name, span.kind) == ("PipelineService/Infer", SpanKind.SERVER)
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"
    assert f"{span.context.trace_id:032x}" == TRACE_ID == response.trace_id
    assert span.attributes is not None
    assert span.attributes["modelyard.request_id"] == request_id
    assert span.attributes["modelyard.pipeline"] == PIPELINE
    # the request on Kafka names the server span as its parent
    parent = served.seen(request_id)["traceparent"].split("-")[2]
    assert parent == f"{span.context.span_id:016x}"


def test_with_tracing_on_a_failed_call_is_an_error_span(served: Served) -> None:
    served.spans.clear()
    with pytest.raises(grpc.RpcError):
        served.traced.Infer(request(b"boom"))
    (span,) = served.spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["modelyard.outcome"] == "model"
