"""The authentication options of `modelyard serve` and `modelyard router` (see modelyard.auth)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from modelyard.auth import AUTH_MODES

__all__ = ["grpc_auth_options", "router_auth_options"]

F = TypeVar("F", bound=Callable[..., Any])


def grpc_auth_options(command: F) -> F:
    """Add --auth and --tokens-file (``GrpcAuthSettings``)."""
    return _add(command, [
        click.option(
            "--auth", type=click.Choice(AUTH_MODES),
            help="How gRPC callers are authenticated [none: everyone is anonymous; production "
            "sets tokens, mtls, tokens+mtls or trusted-network].",
        ),
        click.option(
            "--tokens-file", type=click.Path(dir_okay=False, path_type=Path),
            help="Token digests and what each principal may call (`modelyard tokens add`).",
        ),
    ])  # fmt: skip


def router_auth_options(command: F) -> F:
    """``grpc_auth_options`` plus --callers-file and --signing-key-id (``AuthSettings``)."""
    command = grpc_auth_options(command)
    return _add(command, [
        click.option(
            "--callers-file", type=click.Path(dir_okay=False, path_type=Path),
            help="Keys Kafka requests are signed with (`modelyard callers add`; mode 0600).",
        ),
        click.option(
            "--signing-key-id",
            help="The may_act_for key the gRPC gateway signs with [the file's only one].",
        ),
    ])  # fmt: skip


def _add(command: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        command = option(command)
    return command
