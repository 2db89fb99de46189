"""TLS for the gRPC ports of stages and routers: one settings mixin, read once at start.

Plain TCP unless a certificate is given; with a client CA, callers must present a certificate it
signed (mutual TLS). Files are read when the server starts, so a wrong path fails at start with
the option's name, not on the first call.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Self

from pydantic import BaseModel, Field, model_validator

from modelyard.errors import ConfigError

if TYPE_CHECKING:  # a Kafka-only service never imports grpc
    import grpc

__all__ = ["GrpcTlsSettings"]


class GrpcTlsSettings(BaseModel):
    grpc_tls_cert: Path | None = Field(
        default=None, description="PEM certificate chain of the gRPC server; turns TLS on."
    )
    grpc_tls_key: Path | None = Field(default=None, description="PEM private key of that chain.")
    grpc_tls_client_ca: Path | None = Field(
        default=None, description="PEM CA bundle; callers must present a certificate it signed."
    )

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            raise ValueError("grpc_tls_cert and grpc_tls_key go together")
        if self.grpc_tls_client_ca is not None and self.grpc_tls_cert is None:
            raise ValueError("grpc_tls_client_ca needs grpc_tls_cert and grpc_tls_key")
        return self

    @property
    def grpc_tls(self) -> bool:
        return self.grpc_tls_cert is not None

    def grpc_credentials(self) -> grpc.ServerCredentials | None:
        """Server credentials for ``add_secure_port``, or None for plain TCP."""
        if self.grpc_tls_cert is None or self.grpc_tls_key is None:
            return None
        import grpc  # noqa: PLC0415

        chain = _read("grpc_tls_cert", self.grpc_tls_cert)
        key = _read("grpc_tls_key", self.grpc_tls_key)
        if self.grpc_tls_client_ca is None:
            return grpc.ssl_server_credentials([(key, chain)])
        ca = _read("grpc_tls_client_ca", self.grpc_tls_client_ca)
        return grpc.ssl_server_credentials([(key, chain)], ca, require_client_auth=True)


def _read(option: str, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot read it ({exc.strerror})") from exc
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{option} {path}: not a PEM file")
    return data
