"""The OIP v2 ``inference.GRPCInferenceService`` of one stage, for ``grpc.aio``.

A thin adapter: it authenticates the caller per the port's auth mode (``modelyard.auth``;
every call but ServerLive and ServerReady, which probes make), checks the model name, the
caller's right to it and the size, decodes tensors, calls the transport-neutral core and
encodes the reply. Triton's model configuration, statistics and repository index extensions are
answered from the manifest and the core's statistics (``modelyard.stage.grpc_triton``), so
Triton's tools such as perf_analyzer run against a stage. Errors become gRPC statuses through
``modelyard.errors.POLICY``. A refused call is logged (``grpc_call_refused``) and counted in the
requests metric by its outcome (``unauthenticated``, ``permission_denied``); stages write no audit
records of their own.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, Protocol

import grpc
import grpc.aio
import numpy as np
import structlog

import modelyard
from modelyard.api.oip.v2 import grpc_service_pb2 as pb
from modelyard.api.oip.v2 import grpc_service_pb2_grpc as pb_grpc
from modelyard.auth import CALLER_KEY, Authenticator, Principal, credentials_of
from modelyard.errors import ModelyardError, PayloadTooLargeError, ValidationError, policy_for
from modelyard.grpc.server import listen, server_options, stop_grpc_server
from modelyard.grpc.tensors import decode_inputs, encode_outputs
from modelyard.repository.manifest import Manifest
from modelyard.stage.grpc_triton import (
    EXTENSIONS,
    model_config,
    model_statistics,
    repository_entry,
)
from modelyard.stage.statistics import StageStatistics
from modelyard.telemetry.hooks import Carrier, Hooks, RequestContext
from modelyard.tensors import TensorSpec

__all__ = [
    "CALLER_METADATA_KEY",
    "InferenceCore",
    "OipServicer",
    "start_grpc_server",
    "stop_grpc_server",
]

CALLER_METADATA_KEY = CALLER_KEY  # read in auth mode trusted-network only
Context = grpc.aio.ServicerContext[Any, Any]
Array = np.ndarray[Any, Any]

log = structlog.get_logger(__name__)


class InferenceCore(Protocol):
    """What the servicer needs from a stage (``modelyard.stage.StageCore`` satisfies it)."""

    @property
    def manifest(self) -> Manifest: ...

    @property
    def hooks(self) -> Hooks: ...

    @property
    def statistics(self) -> StageStatistics: ...

    def ready(self) -> bool: ...

    async def infer(
        self, request: RequestContext, fields: Mapping[str, Array], deadline_ms: int | None = None
    ) -> dict[str, Array]:
        """Outputs for one request; raises a ModelyardError subclass on failure."""
        ...


class OipServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Serves the one model version of ``core`` under its manifest name and version.

    ``auth`` (default: mode ``none``) names each caller and checks its right to the model.
    """

    def __init__(self, core: InferenceCore, auth: Authenticator | None = None) -> None:
        self.core = core
        self.auth = auth if auth is not None and auth.enabled else None  # None: no work per call

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)  # answering at all is being alive

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._ready())

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        if self.auth is not None:
            await self._authenticate(context, "")
        return pb.ServerMetadataResponse(
            name="modelyard", version=modelyard.__version__, extensions=EXTENSIONS
        )

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        await self._check_model(request.name, request.version, context)
        if self.auth is not None:
            await self._admit(context, "")
        return pb.ModelReadyResponse(ready=self._ready())

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        await self._check_model(request.name, request.version, context)
        if self.auth is not None:
            await self._admit(context, "")
        manifest = self.core.manifest
        return pb.ModelMetadataResponse(
            name=manifest.name,
            versions=[manifest.version],
            platform=manifest.runtime,
            inputs=[_tensor_metadata(spec) for spec in manifest.inputs],
            outputs=[_tensor_metadata(spec) for spec in manifest.outputs],
        )

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        await self._check_model(request.name, request.version, context)
        if self.auth is not None:
            await self._admit(context, "")
        return pb.ModelConfigResponse(config=model_config(self.core.manifest))

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        if request.name:  # none named: every model, this one
            await self._check_model(request.name, request.version, context)
        if self.auth is not None:
            await self._admit(context, "")
        stats = model_statistics(self.core.manifest, self.core.statistics.snapshot())
        return pb.ModelStatisticsResponse(model_stats=[stats])

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        if self.auth is not None:
            await self._admit(context, "")
        ready = self._ready()
        if request.ready and not ready:  # only the ready models asked for
            return pb.RepositoryIndexResponse()
        return pb.RepositoryIndexResponse(models=[repository_entry(self.core.manifest, ready)])

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        if not self._serves(request.model_name, request.model_version):  # no await per call
            await self._check_model(request.model_name, request.model_version, context)
        who = None if self.auth is None else await self._admit(context, request.id)
        ctx = _request_context(request, context, who)
        try:
            return await self._infer(request, ctx, _deadline_ms(context))
        except ModelyardError as exc:
            code = getattr(grpc.StatusCode, policy_for(exc).grpc_status)
            await _abort(context, code, exc.message)
        except Exception as exc:  # a bug: INTERNAL with a readable line, the traceback to the log
            log.exception("grpc_infer_crashed", request_id=ctx.request_id)
            message = f"internal error ({type(exc).__name__}) in request {ctx.request_id}"
            await _abort(context, grpc.StatusCode.INTERNAL, message)

    async def _infer(
        self, request: pb.ModelInferRequest, ctx: RequestContext, deadline_ms: int | None
    ) -> pb.ModelInferResponse:
        try:
            self._check_size(request)
            fields = decode_inputs(request)
        except ModelyardError as exc:
            self._rejected(ctx, exc)
            raise
        outputs = await self.core.infer(ctx, fields, deadline_ms)
        manifest = self.core.manifest
        response = pb.ModelInferResponse(
            model_name=manifest.name, model_version=manifest.version, id=ctx.request_id
        )
        wanted = [o.name for o in request.outputs]
        encode_outputs(response, _select(outputs, wanted), raw=bool(request.raw_input_contents))
        return response

    async def _admit(self, context: Context, request_id: str) -> Principal:
        """The authenticated caller, allowed this model; else the call ends refused."""
        who = await self._authenticate(context, request_id)
        manifest = self.core.manifest
        assert self.auth is not None
        try:
            self.auth.authorize_model(who, manifest.name, manifest.version)
        except ModelyardError as exc:
            await self._refuse(context, request_id, exc, who)
        return who

    async def _authenticate(self, context: Context, request_id: str) -> Principal:
        assert self.auth is not None
        try:
            return self.auth.authenticate(credentials_of(_carrier(context), context.auth_context()))
        except ModelyardError as exc:
            await self._refuse(context, request_id, exc, None)

    async def _refuse(
        self, context: Context, request_id: str, error: ModelyardError, who: Principal | None
    ) -> NoReturn:
        ctx = RequestContext(request_id or _new_request_id(), "grpc", [], caller=_name(who))
        log.warning(
            "grpc_call_refused", request_id=ctx.request_id, outcome=error.code,
            principal=_name(who), auth=None if who is None else who.auth, reason=error.message,
        )  # fmt: skip
        self._rejected(ctx, error)
        await _abort(
            context, getattr(grpc.StatusCode, policy_for(error).grpc_status), error.message
        )

    def _rejected(self, ctx: RequestContext, error: ModelyardError) -> None:
        """Report a request refused before the core saw it, so metrics and logs count it."""
        hooks = self.core.hooks
        with contextlib.suppress(Exception):  # telemetry never breaks processing
            hooks.request_received(ctx)
            hooks.request_finished(ctx, error.code, time.monotonic() - ctx.received_at)

    def _ready(self) -> bool:
        """A readiness check that raises means not ready (and never an UNKNOWN status)."""
        try:
            return self.core.ready()
        except Exception:
            log.warning("readiness_check_failed", exc_info=True)
            return False

    def _check_size(self, request: pb.ModelInferRequest) -> None:
        limit = self.core.manifest.limits.max_request_bytes
        size = request.ByteSize()
        if size > limit:
            raise PayloadTooLargeError(f"request is {size} bytes; the limit is {limit}")

    def _serves(self, name: str, version: str) -> bool:
        manifest = self.core.manifest
        return name == manifest.name and (not version or version == manifest.version)

    async def _check_model(self, name: str, version: str, context: Context) -> None:
        manifest = self.core.manifest
        if not self._serves(name, version):
            wanted = f"{name}:{version}" if version else name
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"model {wanted!r} is not served here; this server serves {manifest.ref!r}",
            )


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)


def _name(who: Principal | None) -> str | None:
    return None if who is None else who.name


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype, shape=list(spec.shape)
    )


def _select(outputs: Mapping[str, Array], wanted: list[str]) -> Mapping[str, Array]:
    """The requested outputs in the requested order; none requested means all."""
    if not wanted:
        return outputs
    missing = sorted(set(wanted) - set(outputs))
    if missing:
        raise ValidationError(f"unknown output(s) {missing}; the model returns {sorted(outputs)}")
    return {name: outputs[name] for name in wanted}


def _request_context(
    request: pb.ModelInferRequest, context: Context, who: Principal | None
) -> RequestContext:
    caller = None if who is None else who.name  # auth mode none: nobody is named
    return RequestContext(request.id or _new_request_id(), "grpc", _carrier(context), caller=caller)


def _new_request_id() -> str:
    """A random (version 4) UUID as hex, as ``uuid4().hex`` makes, without a system call per
    request: the id names the request in replies, logs and traces; it is no secret."""
    # the version (4) and variant (10) bits set by hand: uuid.UUID() costs ~2 us per call here
    return f"{random.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def _carrier(context: Context) -> Carrier:
    """Invocation metadata (traceparent, tracestate, caller...) as (key, bytes) pairs."""
    metadata = context.invocation_metadata() or ()
    return [(key, value if isinstance(value, bytes) else value.encode()) for key, value in metadata]


def _deadline_ms(context: Context) -> int | None:
    """The caller's gRPC deadline as epoch milliseconds, so expired work is never run."""
    remaining = context.time_remaining()
    return None if remaining is None else int((time.time() + remaining) * 1000)


async def start_grpc_server(
    core: InferenceCore,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    options: Sequence[tuple[str, Any]] | None = None,
    credentials: grpc.ServerCredentials | None = None,
    auth: Authenticator | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Serve ``core`` over OIP v2 on ``host:port`` (0: the OS picks); returns the bound port.

    ``options`` replaces :func:`server_options`; ``credentials`` (e.g.
    ``grpc.ssl_server_credentials``) turns on TLS or mTLS; ``auth`` authenticates callers
    (default: mode ``none``; the mTLS modes need credentials that require client certificates).
    """
    if options is None:
        options = server_options(core.manifest.limits.max_request_bytes)
    server = grpc.aio.server(options=list(options))
    register = pb_grpc.add_GRPCInferenceServiceServicer_to_server
    register(OipServicer(core, auth), server)  # type: ignore[no-untyped-call]  # generated, unannotated
    bound = listen(server, host, port, credentials)
    await server.start()
    return server, bound
