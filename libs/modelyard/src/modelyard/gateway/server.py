"""Start the ``grpc.aio`` server of the router's PipelineService (the lead wires it in)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
from opentelemetry import trace

from modelyard.api.pipeline.v1 import pipeline_pb2_grpc as pb_grpc
from modelyard.auth import Authenticator
from modelyard.gateway.core import PipelineGateway
from modelyard.gateway.principal import PrincipalResolver
from modelyard.gateway.servicer import PipelineServicer
from modelyard.grpc.server import listen, server_options

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "start_pipeline_grpc"]

DEFAULT_MAX_REQUEST_BYTES = 16 << 20  # a scanned page or two; stages apply their own limits


async def start_pipeline_grpc(
    gateway: PipelineGateway,
    host: str = "127.0.0.1",
    port: int = 0,
    credentials: grpc.ServerCredentials | None = None,
    *,
    auth: Authenticator | None = None,
    principal: PrincipalResolver | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    options: Sequence[tuple[str, Any]] | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Serve PipelineService over ``gateway`` on ``host:port`` (0: the OS picks).

    Returns the started server and its bound port; stop it with ``await server.stop(grace)``
    before closing the gateway. ``credentials`` turns on TLS/mTLS; ``auth`` authenticates and
    authorizes callers (default: mode ``none``; modes ``mtls`` and ``tokens+mtls`` need
    ``credentials`` that require client certificates); ``principal`` is a legacy resolver
    instead of ``auth``; ``tracer_provider`` defaults to the global one (set by the entry point,
    or none).
    """
    server = grpc.aio.server(options=list(options or server_options(max_request_bytes)))
    servicer = PipelineServicer(gateway, principal, auth=auth, tracer_provider=tracer_provider)
    pb_grpc.add_PipelineServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    bound = listen(server, host, port, credentials)
    await server.start()
    return server, bound
