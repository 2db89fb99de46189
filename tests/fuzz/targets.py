"""The entry points under fuzzing, each as one check that raises only when the rule is broken.

The rule: any message content gives a normal result or a ``ModelyardError``; never another
exception, never a hang. And what an entry point accepts must be usable downstream: an admitted
request's dispatches decode at the stage, a stage's reply to any message can be produced and read
back, a record that decodes can be encoded, read back and printed.

Each entry point has a structured check (hypothesis draws its arguments) and a byte-level
harness in ``ENTRY_POINTS`` (atheris mutates its bytes; ``corpus/<entry point>/`` files replay
through it). Kafka messages travel as bytes in the framing of :mod:`tests.fuzz.framing`.

The router's entry points run the real ``PipelineRouter`` methods with in-memory fakes for the
Kafka consumer and producer; the gRPC servicers run with a fake context and core.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import yaml
from google.protobuf.message import DecodeError as ProtobufDecodeError
from modelyard.api.oip.v2 import grpc_service_pb2 as oip
from modelyard.api.pipeline.v1 import pipeline_pb2 as ppb
from modelyard.audit import HopRecord, RequestRecord, decode_audit, encode_audit
from modelyard.audit.reader import AuditScan, _keep
from modelyard.audit.waterfall import render_waterfall
from modelyard.control import ControlState, choose_version, should_shadow
from modelyard.control import messages as control_reader
from modelyard.control.changes import ControlError, apply
from modelyard.control.describe import describe_change
from modelyard.control.routing import VERSION, PipelineRouting, StageRouting
from modelyard.control.state import decode_record, encode_record
from modelyard.errors import ModelyardError
from modelyard.gateway.core import PipelineGateway
from modelyard.gateway.pending import RESULT, STAGE
from modelyard.gateway.principal import TokenPrincipals
from modelyard.gateway.servicer import PipelineServicer
from modelyard.graph.flow import RequestFlow, request_specs
from modelyard.graph.load import load_spec, parse_spec
from modelyard.graph.spec import PipelineSpec
from modelyard.kafka.codec import decode_message, encode_reply, reply_headers
from modelyard.kafka.handler import Ticket
from modelyard.model import Inputs, Model, Outcome
from modelyard.router.service import PipelineRouter, RouterOptions
from modelyard.stage.core import StageCore
from modelyard.stage.grpc_adapter import OipServicer
from modelyard.telemetry.hooks import Hooks
from modelyard.tensors import DATATYPES, InputValidator
from modelyard.wire import CONTENT_TYPE_JSON, Envelope, decode_envelope, encode_envelope
from modelyard.wire.headers import H, header_value

from tests.fuzz.cases import allowed, case
from tests.fuzz.fakes import (
    TOPIC,
    Aborted,
    FakeConsumer,
    FakeContext,
    FakeMessage,
    FakeProducer,
    Produced,
)
from tests.fuzz.framing import Message, frame_message, split_message
from tests.fuzz.samples import (
    CONTROL_SAMPLE,
    HOP_SAMPLE,
    MANIFEST,
    REQUEST_SAMPLE,
    SPEC,
)

__all__ = [
    "ENTRY_POINTS",
    "check_audit_record",
    "check_control_record",
    "check_gateway_infer",
    "check_grpc_infer",
    "check_pipeline_file",
    "check_pipeline_spec",
    "check_router_ingress",
    "check_router_reply",
    "check_stage_intake",
]


_VERSION = re.compile(VERSION)


# the router --------------------------------------------------------------------------------
class _Routing:
    """Every stage active at 1, stage a with a canary at 2 and a shadow at 3."""

    state = ControlState(
        {
            "fz": PipelineRouting(
                pipeline="fz",
                stages={
                    "a": StageRouting.model_validate(CONTROL_SAMPLE["state"]["stages"]["a"]),
                    "b": StageRouting(active="1"),
                    "c": StageRouting(active="1"),
                },
            )
        }
    )


class _FakeClients:
    def consumer(self, _config: dict[str, Any]) -> Any:
        return FakeConsumer()

    def producer(self, _config: dict[str, Any]) -> Any:
        return FakeProducer()


def _router() -> PipelineRouter:
    """A PipelineRouter of SPEC on fake Kafka clients, both partitions 0 assigned."""
    options = RouterOptions(bootstrap="fuzz:9092")
    router = PipelineRouter(SPEC, _Routing(), options, clients=_FakeClients())
    router.outbox.assign([(router._ingress, 0), (router._inbox, 0)])
    return router


def _ticket(router: PipelineRouter, topic: str, message: Message, offset: int) -> Ticket:
    """A ticket of a message, as the worker loop hands it to the router."""
    (ticket,) = router.outbox.admit([FakeMessage(topic, message, offset)])  # type: ignore[list-item]
    return ticket


def _ingress(router: PipelineRouter, message: Message, offset: int = 0) -> None:
    router._on_request(_ticket(router, router._ingress, message, offset))


def _reply(router: PipelineRouter, message: Message, offset: int) -> None:
    router._on_reply(_ticket(router, router._inbox, message, offset))


_GOOD_OUTPUTS = {"y": ["en"], "z": ["translated"], "w": np.arange(3, dtype=np.int64)}


def _answer_rest(router: PipelineRouter) -> None:
    """Answer every hop still in flight with a good reply, so requests finish with results."""
    for _ in range(len(SPEC.stages)):
        hops = [
            (live.request_id, hop) for live in router._live.values() for hop in live.hops.values()
        ]
        for request_id, hop in hops:
            d = hop.dispatch
            value = encode_envelope(Envelope(request_id, _GOOD_OUTPUTS, SPEC.pipeline, d.stage))
            headers = [(H.ATTEMPT, str(d.attempt).encode()), (H.STAGE, d.stage.encode())]
            message = Message(request_id.encode(), value, headers)
            _reply(router, message, 2)


def _finish_all(router: PipelineRouter) -> None:
    """Answer what is in flight, end every request still routed (a deadline error) and check
    all that was produced."""
    _answer_rest(router)
    router._expire(math.inf)
    assert not router._live, "requests still routed after every deadline passed"
    for record in router.loop._producer.records:  # type: ignore[attr-defined]
        _check_record(router, record)


def _check_record(router: PipelineRouter, record: Produced) -> None:
    """What the router produced reads back where it goes."""
    topic, value = record.topic, record.value
    content_type = header_value(record.headers, H.CONTENT_TYPE)
    if topic.startswith("yard.m."):  # a dispatch: the stage must decode exactly what was sent
        key = record.key.encode() if isinstance(record.key, str) else record.key
        incoming = decode_message(key, value, record.headers, 1 << 30)
        assert incoming.error is None, f"a stage cannot decode a dispatch: {incoming.error}"
        assert incoming.envelope is not None
        assert encode_envelope(incoming.envelope) == value, "a dispatch does not round-trip"
    elif topic == "yard.audit":
        decode_audit(value)
    elif topic.endswith(".dlq") or topic.endswith(".shadow"):
        pass  # the original bytes, as received
    elif content_type == CONTENT_TYPE_JSON:
        json.loads(value)
    elif header_value(record.headers, H.EVENT) is not None:  # a result, or a progress reply
        decode_envelope(value)


def check_router_ingress(message: Message) -> None:
    """A message on the pipeline's ingress topic: admitted (then dispatched, finished) or
    rejected (dead letter, error result, audit record), and every record produced readable."""
    with case("router_ingress", lambda: frame_message(message)):
        router = _router()
        _ingress(router, message)
        _finish_all(router)


def _admitted(router: PipelineRouter, request_id: str, *, as_json: bool) -> None:
    """Admit a valid request whose stage ``a`` is dispatched, replies wanted on ``replies``."""
    headers: list[tuple[str, Any]] = [(H.REPLY_TO, b"replies"), (H.PROGRESS, b"1")]
    if as_json:
        text = json.dumps(
            {
                "id": request_id,
                "inputs": [
                    {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["hola", "x"]},
                    {"name": "scores", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                ],
            }
        )
        headers.append((H.CONTENT_TYPE, CONTENT_TYPE_JSON.encode()))
        value = text.encode()
    else:
        fields = {"text": ["hola", "x"], "scores": np.ones((1, 3), np.float32)}
        value = encode_envelope(Envelope(request_id, fields, caller="alice"))
    _ingress(router, Message(request_id.encode(), value, headers))
    assert request_id in router._live, "the valid request was not admitted"


def check_router_reply(message: Message) -> None:
    """A message on the router's inbox, while a request (the reply's own id, if it has one)
    waits for its stage ``a``: applied, dropped or dead-lettered, never a crash."""
    with case("router_reply", lambda: frame_message(message)):
        reply = allowed(lambda: decode_envelope(message.value or b""))
        request_id = reply.request_id if reply is not None else "req-1"
        for as_json in (False, True):
            router = _router()
            _admitted(router, request_id, as_json=as_json)
            _reply(router, message, 1)
            _finish_all(router)


# the stage -----------------------------------------------------------------------------------
def _echo(inputs: Inputs) -> dict[str, Any]:
    return {f"out_{name}": value for name, value in inputs.items()}


class _Echo(Model):
    """Answers each input as ``out_<name>``."""

    def load(self) -> None: ...

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        return [_echo(inputs) for inputs in batch]


class _InlineBatcher:
    """Runs every item at once on the caller (a measured, fast, idle model)."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def predict_inline(self, item: Any) -> Outcome:
        return self.model.predict([item.inputs])[0]


def _stage() -> StageCore:
    model = _Echo(MANIFEST, path=None)  # type: ignore[arg-type]
    return StageCore(model, _InlineBatcher(model), Hooks())  # type: ignore[arg-type]


STAGE_CORE = _stage()


def check_stage_intake(message: Message) -> None:
    """A message on a stage's input topic: decoded and validated against the manifest, or
    refused; either way the reply can be produced and read back by the caller."""
    with case("stage_intake", lambda: frame_message(message)):
        limit = MANIFEST.limits.max_request_bytes
        incoming = decode_message(message.key, message.value, message.headers, limit)
        outcome: Any = incoming.error or ModelyardError("undecodable")
        if incoming.envelope is not None and incoming.error is None:
            try:
                inputs = STAGE_CORE.validate(incoming.envelope.fields)
            except ModelyardError as exc:
                outcome = exc
            else:
                outcome = _echo(inputs)
        value = encode_reply(incoming, outcome, "fz", "1", incoming.stage)
        headers = reply_headers(incoming)
        if not incoming.request_id or not incoming.replyable:
            return  # dead-lettered only: nobody to answer
        incoming.request_id.encode()  # the reply's key, as the producer encodes it
        if incoming.meta.reply_to is not None:
            assert TOPIC.fullmatch(incoming.meta.reply_to)
        _check_reply(incoming.is_json, value, headers, outcome)


def _check_reply(is_json: bool, value: bytes, headers: Any, outcome: Any) -> None:
    assert all(isinstance(v, bytes) for _, v in headers)
    if is_json:
        body = json.loads(value)
        assert isinstance(body, dict)
        return
    reply = decode_envelope(value)
    if isinstance(outcome, ModelyardError):
        assert reply.error is not None
        assert reply.error.code == outcome.code
        return
    assert set(reply.fields) == set(outcome)
    for name, array in outcome.items():
        got = reply.fields[name]
        assert got.shape == array.shape, name
        assert got.dtype == array.dtype, name
        assert np.array_equal(got, array, equal_nan=array.dtype.kind in "fc"), name


def _served(call: Callable[[], Any]) -> Any:
    """The servicer call's result, or None when it ended with a non-bug status."""
    try:
        return asyncio.run(call())
    except Aborted as exc:
        aborted = exc
    assert not aborted.is_bug, f"ended with {aborted}"
    return None


def check_grpc_infer(request: oip.ModelInferRequest, metadata: Sequence[Any] = ()) -> None:
    """``ModelInfer`` on a stage serving ``fz:1``: a response whose outputs are well formed, or
    a status that is no crash (see ``Aborted.is_bug``)."""
    with case("grpc_model_infer", request.SerializeToString):
        servicer = OipServicer(STAGE_CORE)
        response = _served(lambda: servicer.ModelInfer(request, FakeContext(metadata)))  # type: ignore[arg-type]
        if response is None:
            return
        oip.ModelInferResponse.FromString(response.SerializeToString())
        raw = list(response.raw_output_contents)
        assert not raw or len(raw) == len(response.outputs)
        for index, output in enumerate(response.outputs):
            assert output.datatype in DATATYPES
            assert min(output.shape, default=0) >= 0
            if raw and output.datatype != "BYTES":
                count = math.prod(output.shape) * DATATYPES[output.datatype].itemsize
                assert len(raw[index]) == count, output


class _LoopbackGateway:
    """A PipelineGateway whose requests are checked the way the router reads them, and whose
    result echoes the request's fields (so encoding results is fuzzed too)."""

    def __init__(self, result_fields: Mapping[str, Any]) -> None:
        self._gateway = SimpleNamespace(_open=True, default_timeout_s=30.0)
        self._result_fields = result_fields  # added to the echo: what stages may answer
        self.failure: BaseException | None = None  # what the servicer turned into INTERNAL

    def _checked(self, pipeline: str, fields: Mapping[str, Any], **options: Any) -> Envelope:
        try:
            return self._sent(pipeline, fields, **options)
        except ModelyardError:
            raise
        except BaseException as exc:
            self.failure = exc
            raise

    def _sent(self, pipeline: str, fields: Mapping[str, Any], **options: Any) -> Envelope:
        request = PipelineGateway._request(
            self._gateway,  # type: ignore[arg-type]
            pipeline, fields, options.get("request_id"), options.get("caller"),
            options.get("deadline_ms"),
        )  # fmt: skip
        headers = [(H.REPLY_TO, b"yard.gw.fuzz"), *(options.get("carrier") or [])]
        value = encode_envelope(request)
        incoming = decode_message(request.request_id.encode(), value, headers, 16 << 20)
        assert incoming.error is None, f"the router cannot decode the request: {incoming.error}"
        assert incoming.envelope is not None
        if pipeline == SPEC.pipeline:
            check_router_ingress(Message(request.request_id.encode(), value, headers))
        fields = {**incoming.envelope.fields, **self._result_fields}
        return Envelope(request.request_id, fields, pipeline, served_by={"a": "ma:1"})

    async def submit(self, pipeline: str, fields: Mapping[str, Any], **options: Any) -> Envelope:
        return self._checked(pipeline, fields, **options)

    async def stream(
        self, pipeline: str, fields: Mapping[str, Any], **options: Any
    ) -> AsyncIterator[tuple[str, Envelope]]:
        result = self._checked(pipeline, fields, **options)
        yield STAGE, result.reply(result.fields, "ma", "1")
        yield RESULT, result


def check_gateway_infer(
    request: ppb.InferRequest,
    metadata: Sequence[Any] = (),
    result_fields: Mapping[str, Any] | None = None,
) -> None:
    """The router's ``Infer`` and ``InferStream``: a response (what the gateway sent decodes at
    the router), or a status that is no crash (see ``Aborted.is_bug``). ``result_fields``
    (decoded from the wire, as a router's result holds them) are added to the echoed result."""
    with case("gateway_infer", request.SerializeToString):
        gateway = _LoopbackGateway(result_fields or {})
        servicer = PipelineServicer(gateway, TokenPrincipals({"tok": "alice"}))  # type: ignore[arg-type]

        async def stream() -> list[Any]:
            context = FakeContext(metadata, None)
            return [e async for e in servicer.InferStream(request, context)]  # type: ignore[arg-type]

        try:
            response = _served(lambda: servicer.Infer(request, FakeContext(metadata, 5.0)))  # type: ignore[arg-type]
            events = _served(stream) or []
        except AssertionError:
            if gateway.failure is not None:  # the cause, not the INTERNAL status it became
                raise gateway.failure from None
            raise
        if response is not None:
            ppb.InferResponse.FromString(response.SerializeToString())
        for event in events:
            ppb.InferEvent.FromString(event.SerializeToString())


# pipeline specs ----------------------------------------------------------------------------
def check_pipeline_spec(text: str) -> None:
    """Spec YAML: a SpecError (a ConfigError), or a spec that dumps and loads back equal, whose
    request fields make a validator, and whose requests flow to the end with any outputs."""
    with case("pipeline_spec", lambda: text.encode("utf-8", "surrogatepass")):
        spec = allowed(lambda: parse_spec(text, "fuzz.yaml"))
        if spec is None:
            return
        data = spec.model_dump(mode="json")
        again = parse_spec(yaml.safe_dump(data, sort_keys=False), "dumped.yaml")
        assert again.model_dump(mode="json") == data, "the spec does not round-trip"
        InputValidator(request_specs(spec))
        assert set(spec.topological_order()) == set(spec.stages)
        _walk(spec)


def check_pipeline_file(data: bytes) -> None:
    """A spec file's bytes, through ``load_spec`` (which reads the file as UTF-8 first)."""
    with case("pipeline_spec", lambda: data), tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(data)
        if allowed(lambda: load_spec(path)) is not None:
            check_pipeline_spec(data.decode())


def _spec_bytes(data: bytes) -> None:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        check_pipeline_file(data)  # a file no editor would save: the loader must say so
    else:
        check_pipeline_spec(text)


def _walk(spec: PipelineSpec) -> None:
    """Route one request through ``spec``, each stage answering every output it is read for."""
    fields = {name: _sample(f.datatype, f.shape) for name, f in spec.inputs.items()}
    request = Envelope("r-1", fields, spec.pipeline, caller="alice", deadline_ms=2**62)
    routing = PipelineRouting(
        pipeline=spec.pipeline, stages={s: StageRouting(active="1") for s in spec.stages}
    )
    state = ControlState({spec.pipeline: routing})
    flow = RequestFlow(spec, request, "alice")
    for _ in range(len(spec.stages) + 1):
        dispatches = flow.advance(state)
        for dispatch in dispatches:
            envelope = Envelope("r-1", dispatch.fields, spec.pipeline, dispatch.stage)
            decode_envelope(encode_envelope(envelope))
            outputs = {f: np.array([b"en"], dtype=object) for f in _read_of(spec, dispatch.stage)}
            flow.accept(dispatch.stage, envelope.reply(outputs, dispatch.model, "1"), 0)
        if flow.finished or not dispatches:
            break
    decode_envelope(encode_envelope(flow.result()))


def _sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    dims = tuple(1 if d == -1 else d for d in shape)
    if math.prod(dims) > 1 << 16 or max(dims, default=0) > 1 << 16:  # (0, 2**62) too: numpy
        dims = tuple(0 for _ in dims)  # refuses an empty array whose byte size overflows
    if datatype == "BYTES":
        return np.full(dims, b"x", dtype=object)
    return np.zeros(dims, DATATYPES[datatype])


def _read_of(spec: PipelineSpec, stage: str) -> set[str]:
    """Every output of ``stage`` that a source or a condition reads."""
    sources = [s for st in spec.stages.values() for s in st.inputs.values()]
    names = {
        r.field
        for s in [*sources, *spec.outputs.values()]
        for r in s.candidates
        if r.stage == stage
    }
    for st in spec.stages.values():
        refs = st.when.references if st.when is not None else frozenset()
        names |= {ref[1] for ref in refs if ref[0] == stage and len(ref) > 1}
    return names


# control and audit records ---------------------------------------------------------------
def check_control_record(value: bytes) -> None:
    """A control-topic value: skipped by the reader, or a record that encodes and decodes back
    equal, applies or is refused with a ControlError, and routes only to versions."""
    with case("control_record", lambda: value):
        control_reader.decode_message(FakeMessage("yard.control", Message(b"fz", value, [])))  # type: ignore[arg-type]
        record = allowed(lambda: decode_record(value))
        if record is None:
            return
        assert decode_record(encode_record(record)) == record, "the record does not round-trip"
        key = record.key.encode()
        positioned = control_reader.decode_message(
            FakeMessage("yard.control", Message(key, value, []))  # type: ignore[arg-type]
        )
        assert positioned is not None
        assert positioned.record == record
        describe_change(record.change)
        allowed(lambda: apply(record.state, record.change))
        allowed(lambda: ControlState.replay([record]))
        state = ControlState().update(record)
        for name in record.state.stages:
            _check_routes(state.stage(record.key, name), f"{record.key}/{name}")


def _check_routes(stage: StageRouting, scope: str) -> None:
    try:
        version, _ = choose_version(stage, "caller", scope=scope)
    except ControlError:
        return
    assert _VERSION.fullmatch(version), f"routes to {version!r}"
    if should_shadow(stage, "r-1", scope=scope):
        assert stage.shadow is not None
        assert _VERSION.fullmatch(stage.shadow.version)
    for release_version in stage.previous:
        assert _VERSION.fullmatch(release_version)


def check_audit_record(value: bytes) -> None:
    """An audit-topic value: counted unreadable by the trace reader, or a record that encodes
    and decodes back equal and draws as a waterfall."""
    with case("audit_record", lambda: value):
        _keep(AuditScan(), value)
        record = allowed(lambda: decode_audit(value))
        if record is None:
            return
        assert decode_audit(encode_audit(record)) == record, "the record does not round-trip"
        other: HopRecord | RequestRecord = (
            RequestRecord.model_validate(REQUEST_SAMPLE)
            if isinstance(record, HopRecord)
            else HopRecord.model_validate(HOP_SAMPLE)
        )
        for records in ([record], [record, record], [other, record]):
            lines = render_waterfall(records)
            "\n".join(lines).encode()  # printable: the terminal takes UTF-8


# byte-level harnesses: what atheris mutates and the corpus replays ------------------------
def _protobuf(cls: Any, data: bytes) -> Any:
    try:
        return cls.FromString(data)
    except ProtobufDecodeError:
        return None  # gRPC refuses it before any servicer runs


def _grpc_bytes(data: bytes) -> None:
    request = _protobuf(oip.ModelInferRequest, data)
    if request is not None:
        check_grpc_infer(request)


def _gateway_bytes(data: bytes) -> None:
    request = _protobuf(ppb.InferRequest, data)
    if request is not None:
        check_gateway_infer(request)


ENTRY_POINTS: dict[str, Callable[[bytes], None]] = {
    "router_ingress": lambda data: check_router_ingress(split_message(data)),
    "router_reply": lambda data: check_router_reply(split_message(data)),
    "stage_intake": lambda data: check_stage_intake(split_message(data)),
    "grpc_model_infer": _grpc_bytes,
    "gateway_infer": _gateway_bytes,
    "pipeline_spec": _spec_bytes,
    "control_record": check_control_record,
    "audit_record": check_audit_record,
}
