"""``grpc.aio`` server primitives: channel options, binding a port (TLS or not), stopping."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio

from modelyard.errors import ConfigError

__all__ = [
    "MESSAGE_HEADROOM_BYTES",
    "listen",
    "server_options",
    "stop_grpc_server",
]

# Room above the request limit for the envelope (names, shapes, metadata), so a request just
# over the limit reaches the servicer and gets its clear "limit is N" message instead of gRPC's
# generic one; anything far larger is still refused by gRPC before it is buffered.
MESSAGE_HEADROOM_BYTES = 1 << 20


def server_options(max_request_bytes: int) -> list[tuple[str, Any]]:
    """Channel options of a stage server whose requests are at most ``max_request_bytes``."""
    return [
        ("grpc.max_receive_message_length", max_request_bytes + MESSAGE_HEADROOM_BYTES),
        ("grpc.max_send_message_length", -1),  # outputs are the model's; never cut them off
        # gRPC sets SO_REUSEPORT by default, which lets a second server silently share the port
        # and steal half the traffic; a stage must own its port or fail to start. (SO_REUSEADDR
        # gRPC sets on every TCP listener, with no option to turn it off: a server restarted on
        # its port binds while connections of the one before linger in TIME_WAIT.)
        ("grpc.so_reuseport", 0),
    ]


async def stop_grpc_server(server: grpc.aio.Server, grace: float | None = 5.0) -> None:
    """Stop accepting calls, let those in flight finish for up to ``grace`` seconds, then close."""
    await server.stop(grace)


def listen(
    server: grpc.aio.Server, host: str, port: int, credentials: grpc.ServerCredentials | None
) -> int:
    """Bind ``server`` to ``host:port`` (TLS with ``credentials``); returns the bound port."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # recent grpcio raises; older ones return 0
        raise ConfigError(f"cannot listen for gRPC on {address}: {exc}") from exc
    if bound == 0:
        raise ConfigError(f"cannot listen for gRPC on {address}")
    return bound
