"""Legacy principal resolvers: a caller's name from a gRPC call's metadata, and nothing else.

Services authenticate with :class:`modelyard.auth.Authenticator` (auth modes, a hashed tokens
file, mTLS subjects, allow lists); ``start_pipeline_grpc(auth=...)`` takes one. A resolver here
(``Callable[[Metadata], str]``) is still accepted by ``principal=`` for embedding code and old
tests: it names the caller, checks no allow list, and its names are recorded with auth ``none``.
:class:`TokenPrincipals` keeps plain-text tokens in memory and trusts ``x-modelyard-caller``
unless told not to: do not use it in front of untrusted callers.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence

from modelyard.auth import ANONYMOUS, AUTHORIZATION_KEY, CALLER_KEY
from modelyard.errors import UnauthenticatedError

__all__ = [
    "ANONYMOUS",
    "AUTHORIZATION_KEY",
    "CALLER_KEY",
    "Metadata",
    "PrincipalResolver",
    "TokenPrincipals",
]

Metadata = Sequence[tuple[str, str | bytes]]
PrincipalResolver = Callable[[Metadata], str]


class TokenPrincipals:
    """Bearer token -> principal by table; else the caller header (if trusted); else anonymous.

    An unknown or malformed bearer token raises UnauthenticatedError: a caller who presents
    credentials must not be served as somebody else.
    """

    def __init__(
        self,
        tokens: Mapping[str, str] | None = None,
        *,
        trust_caller_header: bool = True,
        default: str = ANONYMOUS,
    ) -> None:
        self._tokens = dict(tokens or {})
        self.trust_caller_header = trust_caller_header
        self.default = default

    def __call__(self, metadata: Metadata) -> str:
        if (authorization := _last(metadata, AUTHORIZATION_KEY)) is not None:
            return self._from_token(authorization)
        if self.trust_caller_header and (caller := _last(metadata, CALLER_KEY)):
            return caller
        return self.default

    def _from_token(self, authorization: str) -> str:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("authorization metadata must be 'Bearer <token>'")
        token = token.strip()
        for known, principal in self._tokens.items():  # constant-time compare: no timing oracle
            if hmac.compare_digest(known.encode(), token.encode()):
                return principal
        raise UnauthenticatedError("unknown bearer token")


def _last(metadata: Metadata, key: str) -> str | None:
    found: str | None = None
    for name, value in metadata:
        if name.lower() == key:
            found = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return found
