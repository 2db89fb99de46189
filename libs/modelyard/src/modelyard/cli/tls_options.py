"""The gRPC TLS options that `modelyard serve` and `modelyard router` share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["grpc_tls_options"]

F = TypeVar("F", bound=Callable[..., Any])


def grpc_tls_options(command: F) -> F:
    """Add --grpc-tls-cert, --grpc-tls-key and --grpc-tls-client-ca (see ``grpc/tls.py``)."""
    paths = click.Path(path_type=Path)
    for option in reversed([
        click.option("--grpc-tls-cert", type=paths, help="PEM certificate chain: serve TLS."),
        click.option("--grpc-tls-key", type=paths, help="PEM key of that chain."),
        click.option(
            "--grpc-tls-client-ca",
            type=paths,
            help="PEM CA: require client certificates it signed (mTLS).",
        ),
    ]):  # fmt: skip
        command = option(command)
    return command
