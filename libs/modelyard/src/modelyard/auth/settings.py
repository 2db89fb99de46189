"""Authentication settings: a mixin of every service settings model with a gRPC port.

``GrpcAuthSettings`` (stages and routers): the mode and the tokens file. ``AuthSettings``
(routers) adds the callers file of Kafka request keys and which of them the router's gRPC
gateway signs with. Files are read when the service starts, so a bad one stops it there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import BaseModel, Field, model_validator

from modelyard.auth.authenticator import Authenticator
from modelyard.auth.callers import CallerKey, CallerKeys
from modelyard.auth.principal import AuthMode
from modelyard.auth.tokens import TokenTable
from modelyard.errors import ConfigError

__all__ = ["AuthSettings", "GrpcAuthSettings"]

_CERTIFICATE_MODES = ("mtls", "tokens+mtls")


class GrpcAuthSettings(BaseModel):
    auth: AuthMode = Field(
        default="none",
        description="How gRPC callers are authenticated: none (everyone is anonymous; the "
        "embedded default, production sets another), trusted-network (x-modelyard-caller "
        "names them), tokens, mtls, tokens+mtls.",
    )
    tokens_file: Path | None = Field(
        default=None,
        description="Tokens file: token digests and what each principal may call (the allow "
        "list of every mode; `modelyard tokens add`).",
    )

    @model_validator(mode="after")
    def _auth_complete(self) -> Self:
        if self.auth in ("tokens", *_CERTIFICATE_MODES) and self.tokens_file is None:
            raise ValueError(f"auth {self.auth} needs tokens_file")
        # the TLS mixin beside this one (GrpcTlsSettings) says whether clients show certificates
        if self.auth in _CERTIFICATE_MODES and getattr(self, "grpc_tls_client_ca", None) is None:
            raise ValueError(f"auth {self.auth} needs grpc_tls_client_ca (client certificates)")
        return self

    def authenticator(self) -> Authenticator:
        """The configured authenticator, its tokens file read now (ConfigError if bad)."""
        path = self.tokens_file
        if path is not None and not path.is_file():  # a typo must not mean "nobody allowed"
            raise ConfigError(f"tokens file {path} does not exist")
        return Authenticator(self.auth, None if path is None else TokenTable.load(path))


class AuthSettings(GrpcAuthSettings):
    callers_file: Path | None = Field(
        default=None,
        description="Callers file (mode 0600): the keys Kafka requests are signed with "
        "(`modelyard callers add`); the router verifies requests against it when auth is on.",
    )
    signing_key_id: str | None = Field(
        default=None,
        description="The callers-file key the router's gRPC gateway signs forwarded requests "
        "with (default: the file's only may_act_for key).",
    )

    def caller_keys(self) -> CallerKeys | None:
        """The callers file, read now; None when none is configured."""
        return None if self.callers_file is None else CallerKeys.load(self.callers_file)

    def gateway_key(self, keys: CallerKeys | None) -> CallerKey | None:
        """The key the gateway signs with: ``signing_key_id``, else the one may_act_for key."""
        if keys is None:
            if self.signing_key_id is not None:
                raise ConfigError("signing_key_id needs callers_file")
            return None
        if self.signing_key_id is not None:
            key = keys.get(self.signing_key_id)
            if key is None or not key.may_act_for:
                raise ConfigError(f"callers file has no may_act_for key {self.signing_key_id!r}")
            return key
        gateways = [key for key in keys.keys if key.may_act_for]
        if len(gateways) > 1:
            raise ConfigError("callers file has several may_act_for keys: set signing_key_id")
        return gateways[0] if gateways else None
