"""Authenticated callers on real gRPC ports (loopback) in front of the real embedded broker.

The router's PipelineService (a real PipelineGateway and the fake router behind it) and a
stage's OIP server, in tokens and mTLS modes: refused calls get UNAUTHENTICATED or
PERMISSION_DENIED, the gateway audits each refusal on the audit topic, and what it forwards is
signed for the principal it authenticated.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from modelyard.api.oip.v2 import grpc_service_pb2 as oip
from modelyard.api.oip.v2 import grpc_service_pb2_grpc as oip_grpc
from modelyard.api.pipeline.v1 import pipeline_pb2 as pb
from modelyard.api.pipeline.v1 import pipeline_pb2_grpc as pb_grpc
from modelyard.audit import decode_audit
from modelyard.auth import (
    Authenticator,
    CallerKeys,
    Principal,
    TokenEntry,
    TokenTable,
    bearer_metadata,
    hash_token,
    new_caller_key,
    verify_request,
)
from modelyard.gateway import PipelineGateway, start_pipeline_grpc
from modelyard.repository.manifest import Manifest
from modelyard.stage.grpc_adapter import start_grpc_server
from modelyard.telemetry.hooks import Hooks, RequestContext
from modelyard.tensors import TensorSpec
from modelyard.topics import audit_topic, pipeline_ingress_topic
from modelyard.wire import decode_envelope

from tests.support.aio import LoopThread
from tests.support.fake_router import running_fake_router
from tests.support.kafka_io import Collector

pytestmark = pytest.mark.integration

PIPELINE = "echo"
TABLE = TokenTable([
    TokenEntry(principal="alice", token_sha256=hash_token("t-alice"), pipelines=(PIPELINE,),
               models=("doubler:3",)),
    TokenEntry(principal="bob", token_sha256=hash_token("t-bob"), pipelines=("billing",),
               models=("doubler:1",)),
    TokenEntry(principal="client", pipelines=(PIPELINE,)),  # the mTLS client's subject CN
])  # fmt: skip
GATEWAY_KEY = new_caller_key("router", ["*"], may_act_for=True)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _signed(d: Path, name: str, san: str | None = None) -> None:
    key, csr, pem = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={name}")  # fmt: skip
    extra: list[str | Path] = []
    if san is not None:
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        extra = ["-extfile", d / f"{name}.ext"]
    _openssl("x509", "-req", "-in", csr, "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
             "-CAcreateserial", "-out", pem, "-days", "1", *extra)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days", "1",
             "-subj", "/CN=modelyard-test-ca")  # fmt: skip
    _signed(d, "server", san="IP:127.0.0.1,DNS:localhost")
    _signed(d, "client")
    return d


def _mtls_server(pki: Path) -> grpc.ServerCredentials:
    pair = ((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())
    ca = (pki / "ca.pem").read_bytes()
    return grpc.ssl_server_credentials([pair], ca, require_client_auth=True)


def _mtls_channel(pki: Path, port: int) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(),
        (pki / "client.key").read_bytes(),
        (pki / "client.pem").read_bytes(),
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


@dataclass
class Router:
    prefix: str
    stub: pb_grpc.PipelineServiceStub
    mtls_port: int
    seen: Any

    def call(self, metadata: list[tuple[str, str]], pipeline: str = PIPELINE) -> str:
        request_id = uuid.uuid4().hex
        text = pb.Tensor(name="text", datatype="BYTES", shape=[1], bytes_contents=[b"hi"])
        request = pb.InferRequest(id=request_id, pipeline=pipeline, inputs=[text])
        self.stub.Infer(request, metadata=metadata, timeout=30)
        return request_id


@pytest.fixture(scope="module")
def router(broker: str, pki: Path) -> Iterator[Router]:
    prefix = f"t-auth-{uuid.uuid4().hex[:8]}"
    loop = LoopThread()
    with running_fake_router(broker, prefix, PIPELINE) as fake:
        gateway = PipelineGateway(broker, topic_prefix=prefix, signing_key=GATEWAY_KEY)
        loop.run(gateway.start())
        tokens = Authenticator("tokens", TABLE)
        server, port = loop.run(start_pipeline_grpc(gateway, auth=tokens))
        mtls, mtls_port = loop.run(
            start_pipeline_grpc(
                gateway, credentials=_mtls_server(pki), auth=Authenticator("mtls", TABLE)
            )
        )
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.PipelineServiceStub(channel)  # type: ignore[no-untyped-call]
                yield Router(prefix, stub, mtls_port, fake.seen)
        finally:
            loop.run(server.stop(1.0))
            loop.run(mtls.stop(1.0))
            loop.run(gateway.close())
            loop.close()


def _refusal(broker: str, prefix: str, request_id: str) -> dict[str, Any]:
    audit = Collector(broker, audit_topic(prefix))
    try:
        records = audit.until(lambda ms: any(m.key() == request_id.encode() for m in ms))
    finally:
        audit.close()
    (value,) = [m.value() for m in records if m.key() == request_id.encode()]
    decode_audit(value)  # a valid request record, as the audit sink will read it
    return json.loads(value)  # type: ignore[no-any-return]


def _refused(router: Router, metadata: list[tuple[str, str]], pipeline: str = PIPELINE) -> Any:
    with pytest.raises(grpc.RpcError) as failed:
        router.call(metadata, pipeline)
    return failed.value


def _request_id_of(error: Any) -> str:
    return dict(error.trailing_metadata())["x-modelyard-request-id"]  # type: ignore[no-any-return]


def test_no_token_is_unauthenticated_and_audited(broker: str, router: Router) -> None:
    for metadata in ([], [("x-modelyard-caller", "admin")]):  # the header proves nothing here
        error = _refused(router, metadata)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "bearer token" in error.details()
        record = _refusal(broker, router.prefix, _request_id_of(error))
        assert record["kind"] == "request"
        assert record["outcome"] == "unauthenticated"
        assert (record["principal"], record["caller"], record["served_by"]) == (None, None, {})
    wrong = _refused(router, bearer_metadata("t-wrong"))
    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_pipeline_outside_the_grant_is_denied_and_audited(broker: str, router: Router) -> None:
    error = _refused(router, bearer_metadata("t-bob"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'bob' may not call pipeline 'echo'" in error.details()
    record = _refusal(broker, router.prefix, _request_id_of(error))
    assert (record["outcome"], record["principal"], record["auth"]) == (
        "permission_denied", "bob", "token",
    )  # fmt: skip
    assert record["pipeline"] == PIPELINE
    assert not any(s.envelope.request_id == record["request_id"] for s in router.seen)


def test_the_token_names_the_caller_and_the_request_is_signed_for_it(
    broker: str, router: Router
) -> None:
    metadata = [*bearer_metadata("t-alice"), ("x-modelyard-caller", "admin")]
    request_id = router.call(metadata)
    (seen,) = [s for s in router.seen if s.envelope.request_id == request_id]
    assert seen.envelope.caller == "alice"
    assert seen.headers["modelyard-auth"] == "token"
    ingress = Collector(broker, pipeline_ingress_topic(router.prefix, PIPELINE))
    try:
        messages = ingress.until(lambda ms: any(m.key() == request_id.encode() for m in ms))
    finally:
        ingress.close()
    (msg,) = [m for m in messages if m.key() == request_id.encode()]
    value = msg.value()
    callers = CallerKeys([GATEWAY_KEY])
    principal = verify_request(
        msg.headers(), value, decode_envelope(value), callers, pipeline=PIPELINE
    )
    assert principal == Principal("alice", "token")


def test_the_client_certificate_subject_is_the_principal(pki: Path, router: Router) -> None:
    with _mtls_channel(pki, router.mtls_port) as channel:
        stub = pb_grpc.PipelineServiceStub(channel)  # type: ignore[no-untyped-call]
        text = pb.Tensor(name="text", datatype="BYTES", shape=[1], bytes_contents=[b"tls"])
        request_id = uuid.uuid4().hex
        stub.Infer(pb.InferRequest(id=request_id, pipeline=PIPELINE, inputs=[text]), timeout=30)
        with pytest.raises(grpc.RpcError) as denied:  # CN "client" may call echo only
            stub.Infer(pb.InferRequest(pipeline="billing", inputs=[text]), timeout=30)
    (seen,) = [s for s in router.seen if s.envelope.request_id == request_id]
    assert (seen.envelope.caller, seen.headers["modelyard-auth"]) == ("client", "mtls")
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


# a stage's OIP server ---------------------------------------------------------------------


class EchoCore:
    """A stand-in stage ``doubler:3`` that doubles ``x`` and records who called."""

    def __init__(self) -> None:
        spec = TensorSpec(name="x", datatype="FP32", shape=(-1,))
        self.manifest = Manifest(name="doubler", version="3", runtime="python",
                                 inputs=(spec,), outputs=(spec,))  # fmt: skip
        self.hooks = Hooks()
        self.callers: list[str | None] = []

    def ready(self) -> bool:
        return True

    async def infer(
        self, request: RequestContext, fields: Mapping[str, Any], deadline_ms: int | None = None
    ) -> dict[str, Any]:
        self.callers.append(request.caller)
        return {"x": np.asarray(fields["x"]) * 2}


@pytest.fixture(scope="module")
def stage() -> Iterator[tuple[EchoCore, oip_grpc.GRPCInferenceServiceStub]]:
    core, loop = EchoCore(), LoopThread()
    server, port = loop.run(start_grpc_server(core, auth=Authenticator("tokens", TABLE)))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield core, oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
    finally:
        loop.run(server.stop(1.0))
        loop.close()


def _infer(stub: oip_grpc.GRPCInferenceServiceStub, metadata: list[tuple[str, str]]) -> Any:
    request = oip.ModelInferRequest(model_name="doubler")
    request.inputs.add(name="x", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1, 2])
    return stub.ModelInfer(request, metadata=[*metadata, ("x-modelyard-caller", "admin")])


def test_a_stage_refuses_like_the_router(
    stage: tuple[EchoCore, oip_grpc.GRPCInferenceServiceStub],
) -> None:
    core, stub = stage
    assert stub.ServerLive(oip.ServerLiveRequest()).live  # probes need no credentials
    with pytest.raises(grpc.RpcError) as anonymous:
        _infer(stub, [])
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as other_version:  # bob may call doubler:1 only
        _infer(stub, bearer_metadata("t-bob"))
    assert other_version.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as metadata:
        stub.ModelMetadata(oip.ModelMetadataRequest(name="doubler"))
    assert metadata.value.code() == grpc.StatusCode.UNAUTHENTICATED
    response = _infer(stub, bearer_metadata("t-alice"))
    assert list(response.outputs[0].contents.fp32_contents) == [2.0, 4.0]
    assert core.callers == ["alice"]  # never the header's "admin"
