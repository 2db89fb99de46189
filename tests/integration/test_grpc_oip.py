"""A stage's OIP v2 gRPC server on loopback, called with the stock ``tritonclient.grpc``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, TypeVar

import grpc
import grpc.aio
import modelyard
import numpy as np
import pytest
import tritonclient.grpc as triton
from modelyard.api.oip.v2 import grpc_service_pb2 as pb
from modelyard.api.oip.v2 import grpc_service_pb2_grpc as pb_grpc
from modelyard.errors import ModelError
from modelyard.repository.manifest import Limits, Manifest
from modelyard.stage.grpc_adapter import CALLER_METADATA_KEY, start_grpc_server, stop_grpc_server
from modelyard.stage.statistics import StageStatistics
from modelyard.telemetry.hooks import Hooks, RequestContext
from modelyard.tensors import TensorSpec, validate_inputs
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

T = TypeVar("T")
Array = np.ndarray[Any, Any]
MODEL = "doubler"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
LIMIT_BYTES = 64 << 10


class DoublingCore:
    """A stand-in stage: doubles FP32 ``x``, echoes BYTES ``text``; negative ``x`` is a model
    error and the text "crash" a bug. It validates like the real core, so a wrong datatype is a
    ValidationError."""

    def __init__(self) -> None:
        self.manifest = Manifest(
            name=MODEL,
            version="3",
            runtime="python",
            inputs=(
                TensorSpec(name="x", datatype="FP32", shape=(-1,), optional=True),
                TensorSpec(name="text", datatype="BYTES", shape=(-1,), optional=True),
            ),
            outputs=(
                TensorSpec(name="y", datatype="FP32", shape=(-1,)),
                TensorSpec(name="echo", datatype="BYTES", shape=(-1,)),
            ),
            limits=Limits(max_request_bytes=LIMIT_BYTES),
        )
        self.hooks = Hooks()
        self.statistics = StageStatistics()
        self.seen: list[RequestContext] = []
        self.deadlines: list[int | None] = []

    def ready(self) -> bool:
        return True

    async def infer(
        self, request: RequestContext, fields: Mapping[str, Array], deadline_ms: int | None = None
    ) -> dict[str, Array]:
        self.seen.append(request)
        self.deadlines.append(deadline_ms)
        inputs = validate_inputs(self.manifest.inputs, fields)
        out: dict[str, Array] = {}
        if "x" in inputs:
            if (inputs["x"] < 0).any():
                raise ModelError("the doubler cannot double negative numbers")
            out["y"] = inputs["x"] * 2
        if "text" in inputs:
            if b"crash" in inputs["text"].tolist():
                raise RuntimeError("bug at /srv/secret/path.py")  # not a ModelyardError
            out["echo"] = inputs["text"]
        return out


class LoopThread:
    """An asyncio loop on its own thread, so sync clients can call a grpc.aio server."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-grpc-loop")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[DoublingCore, int]]:
    """The core and the port of a real OIP server, shared by this module's tests."""
    core, loop = DoublingCore(), LoopThread()
    try:
        server, port = loop.run(start_grpc_server(core))
        try:
            yield core, port
        finally:
            loop.run(stop_grpc_server(server, grace=1.0))
    finally:
        loop.close()


@pytest.fixture
def core(served: tuple[DoublingCore, int]) -> DoublingCore:
    served[0].seen.clear()
    return served[0]


@pytest.fixture
def client(served: tuple[DoublingCore, int]) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{served[1]}")
    yield client
    client.close()


def fp32(name: str, values: list[float]) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "FP32")
    tensor.set_data_from_numpy(np.array(values, dtype=np.float32))
    return tensor


def status_of(error: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(error.value.status())


def test_health_and_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "3")


def test_server_and_model_metadata(client: triton.InferenceServerClient) -> None:
    server = client.get_server_metadata(as_json=True)
    assert (server["name"], server["version"]) == ("modelyard", modelyard.__version__)
    model = client.get_model_metadata(MODEL, as_json=True)
    assert (model["name"], model["versions"], model["platform"]) == (MODEL, ["3"], "python")
    assert model["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": ["-1"]}
    assert [o["name"] for o in model["outputs"]] == ["y", "echo"]


def test_triton_model_configuration_statistics_and_index(
    client: triton.InferenceServerClient, core: DoublingCore
) -> None:
    assert client.get_server_metadata(as_json=True)["extensions"] == [
        "model_configuration",
        "statistics",
    ]
    config = client.get_model_config(MODEL, "3", as_json=True)["config"]
    assert (config["name"], config["backend"]) == (MODEL, "python")
    assert "max_batch_size" not in config  # 0: a [-1] vector has no batch axis of its own
    assert config["input"] == [
        {"name": "x", "data_type": "TYPE_FP32", "dims": ["-1"], "optional": True},
        {"name": "text", "data_type": "TYPE_STRING", "dims": ["-1"], "optional": True},
    ]
    assert [(o["name"], o["data_type"]) for o in config["output"]] == [
        ("y", "TYPE_FP32"),
        ("echo", "TYPE_STRING"),
    ]
    core.statistics.request_finished(RequestContext("r", "grpc"), "ok", 0.25)
    for name in (MODEL, ""):  # no name: every model, this one
        (stats,) = client.get_inference_statistics(name, as_json=True)["model_stats"]
        assert (stats["name"], stats["version"], stats["inference_count"]) == (MODEL, "3", "1")
        assert stats["inference_stats"]["success"]["ns"] == "250000000"
    index = client.get_model_repository_index(as_json=True)["models"]
    assert index == [{"name": MODEL, "version": "3", "state": "READY"}]
    for call in (client.get_model_config, client.get_inference_statistics):
        with pytest.raises(InferenceServerException) as caught:
            call("nope")
        assert status_of(caught) == "StatusCode.NOT_FOUND"


def test_infer_fp32_and_bytes(client: triton.InferenceServerClient, core: DoublingCore) -> None:
    text = triton.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"hola", "näh".encode()], dtype=object))
    result = client.infer(
        MODEL,
        [fp32("x", [1.5, -0.0, 4.0]), text],
        request_id="req-1",
        headers={CALLER_METADATA_KEY: "alice", "traceparent": TRACEPARENT},
    )
    assert result.as_numpy("y").tolist() == [3.0, -0.0, 8.0]
    assert result.as_numpy("echo").tolist() == [b"hola", "näh".encode()]
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (MODEL, "3", "req-1")
    (seen,) = core.seen
    # auth none: a caller the header claims is nobody (only --auth trusted-network trusts it)
    assert (seen.request_id, seen.transport, seen.caller) == ("req-1", "grpc", None)
    assert ("traceparent", TRACEPARENT.encode()) in seen.carrier


def test_requested_outputs_filter_and_a_generated_id(
    client: triton.InferenceServerClient, core: DoublingCore
) -> None:
    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"a"], dtype=object))
    result = client.infer(
        MODEL, [fp32("x", [1.0]), text], outputs=[triton.InferRequestedOutput("echo")]
    )
    assert [o.name for o in result.get_response().outputs] == ["echo"]
    assert result.get_response().id == core.seen[0].request_id != ""
    assert core.seen[0].caller is None


def test_typed_contents_get_typed_outputs(served: tuple[DoublingCore, int]) -> None:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="x", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1, 2])
    with grpc.insecure_channel(f"127.0.0.1:{served[1]}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]  # generated
        response = stub.ModelInfer(request, timeout=10)
    assert not response.raw_output_contents
    assert list(response.outputs[0].contents.fp32_contents) == [2.0, 4.0]


def test_unknown_model_or_version_is_not_found(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="not served here") as caught:
        client.infer("nope", [fp32("x", [1.0])])
    assert status_of(caught) == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata(MODEL, "2")
    assert status_of(caught) == "StatusCode.NOT_FOUND"


def test_wrong_datatype_is_invalid_argument(client: triton.InferenceServerClient) -> None:
    x = triton.InferInput("x", [1], "INT32")
    x.set_data_from_numpy(np.array([1], dtype=np.int32))
    with pytest.raises(InferenceServerException, match="expected FP32, got INT32") as caught:
        client.infer(MODEL, [x])
    assert status_of(caught) == "StatusCode.INVALID_ARGUMENT"


def test_model_error_is_internal_with_its_message(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="cannot double negative") as caught:
        client.infer(MODEL, [fp32("x", [-1.0])])
    assert status_of(caught) == "StatusCode.INTERNAL"


def test_unexpected_exception_is_internal_without_details(
    client: triton.InferenceServerClient,
) -> None:
    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"crash"], dtype=object))
    with pytest.raises(
        InferenceServerException, match=r"internal error \(RuntimeError\)"
    ) as caught:
        client.infer(MODEL, [text], request_id="req-crash")
    assert status_of(caught) == "StatusCode.INTERNAL"
    assert "req-crash" in str(caught.value.message())
    assert "secret" not in str(caught.value)


def test_oversized_request_is_resource_exhausted(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match=f"limit is {LIMIT_BYTES}") as caught:
        client.infer(MODEL, [fp32("x", [1.0] * (LIMIT_BYTES // 4 + 1))])
    assert status_of(caught) == "StatusCode.RESOURCE_EXHAUSTED"


def test_caller_deadline_reaches_the_core(
    client: triton.InferenceServerClient, core: DoublingCore
) -> None:
    before_ms = time.time() * 1000
    client.infer(MODEL, [fp32("x", [1.0])], client_timeout=30)
    client.infer(MODEL, [fp32("x", [1.0])])
    with_deadline, without = core.deadlines[-2:]
    assert with_deadline is not None
    assert before_ms + 25_000 < with_deadline < before_ms + 31_000
    assert without is None
