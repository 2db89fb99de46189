"""One gRPC port's authentication and authorization, per ``AuthMode``; transport-neutral.

The gRPC adapters (the router's gateway, a stage's OIP server) hand over what a call carries,
as :class:`Credentials`, and get a :class:`Principal` back or an error whose gRPC status the
error policy gives: UnauthenticatedError → UNAUTHENTICATED, PermissionDeniedError →
PERMISSION_DENIED.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from modelyard.auth.grants import Grant
from modelyard.auth.principal import AuthMode, Principal
from modelyard.auth.tokens import TokenTable
from modelyard.errors import ConfigError, PermissionDeniedError, UnauthenticatedError

__all__ = [
    "AUTHORIZATION_KEY",
    "CALLER_KEY",
    "Authenticator",
    "Credentials",
    "bearer_metadata",
    "credentials_of",
]

AUTHORIZATION_KEY = "authorization"
CALLER_KEY = "x-modelyard-caller"  # read in trusted-network mode only
_CN = "x509_common_name"
_WANTED = {
    "tokens": "a bearer token",
    "mtls": "a client certificate",
    "tokens+mtls": "a bearer token or a client certificate",
}  # the keys grpc's auth_context() gives a verified client certificate


@dataclass(frozen=True, slots=True)
class Credentials:
    """What one call presents: an authorization value, a caller header, a certificate CN."""

    authorization: str | None = None
    caller_header: str | None = None
    certificate_cn: str | None = None


def credentials_of(
    metadata: Sequence[tuple[str, str | bytes]], auth_context: Mapping[str, Iterable[bytes]]
) -> Credentials:
    """A gRPC call's credentials, from ``context.invocation_metadata()`` and
    ``context.auth_context()`` (whose certificate entries gRPC sets only for a certificate the
    server's client CA verified)."""
    cn = next(iter(auth_context.get(_CN) or ()), None)
    return Credentials(
        authorization=_last(metadata, AUTHORIZATION_KEY),
        caller_header=_last(metadata, CALLER_KEY),
        certificate_cn=cn.decode("utf-8", "replace") if cn else None,
    )


def bearer_metadata(token: str) -> list[tuple[str, str]]:
    """gRPC metadata that presents ``token``: pass as ``metadata=`` to any stub call."""
    return [(AUTHORIZATION_KEY, f"Bearer {token}")]


class Authenticator:
    """Names the caller of each call and checks what it may call, per ``mode``.

    ``tokens`` (the tokens file) is required by ``tokens``, ``mtls`` and ``tokens+mtls``; in
    ``trusted-network`` mode it is the optional allow list (none: everyone may call everything).
    """

    def __init__(self, mode: AuthMode = "none", tokens: TokenTable | None = None) -> None:
        if mode in ("tokens", "mtls", "tokens+mtls") and tokens is None:
            raise ConfigError(f"auth mode {mode!r} needs a tokens file (--tokens-file)")
        self.mode = mode
        self.tokens = tokens

    @property
    def enabled(self) -> bool:
        """False in mode ``none``: every call is anonymous and allowed (adapters skip work)."""
        return self.mode != "none"

    def authenticate(self, credentials: Credentials) -> Principal:
        """The principal of a call; UnauthenticatedError when it proves none."""
        mode = self.mode
        if mode == "none":
            return Principal.anonymous()
        if mode == "trusted-network":
            if not credentials.caller_header:
                raise UnauthenticatedError(f"no {CALLER_KEY} header (auth mode trusted-network)")
            return Principal(credentials.caller_header, "trusted-header")
        if credentials.authorization is not None and mode != "mtls":
            return self._from_token(credentials.authorization)
        if credentials.certificate_cn and mode != "tokens":
            return Principal(credentials.certificate_cn, "mtls")
        raise UnauthenticatedError(f"no credentials: this server needs {_WANTED[mode]}")

    def grant_of(self, principal: Principal) -> Grant:
        if self.tokens is None:  # none, or trusted-network without an allow list
            return Grant.everything()
        return self.tokens.grant_of(principal.name)

    def authorize_pipeline(self, principal: Principal, pipeline: str) -> None:
        if not self.grant_of(principal).allows_pipeline(pipeline):
            raise PermissionDeniedError(f"{principal.name!r} may not call pipeline {pipeline!r}")

    def authorize_model(self, principal: Principal, model: str, version: str) -> None:
        if not self.grant_of(principal).allows_model(model, version):
            raise PermissionDeniedError(f"{principal.name!r} may not call model {model}:{version}")

    def _from_token(self, authorization: str) -> Principal:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise UnauthenticatedError("authorization metadata must be 'Bearer <token>'")
        assert self.tokens is not None  # checked at construction for every token mode
        entry = self.tokens.lookup(token)
        if entry is None:
            raise UnauthenticatedError("unknown bearer token")
        return Principal(entry.principal, "token")


def _last(metadata: Sequence[tuple[str, str | bytes]], key: str) -> str | None:
    found: str | None = None
    for name, value in metadata:
        if name.lower() == key:
            found = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return found
