"""Who is calling, and how that was established: the result of every authentication.

``AuthMode`` is how a gRPC port decides (settings: ``MODELYARD_AUTH``); ``AuthMethod`` is how
one principal was established, recorded beside its name in audit records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "ANONYMOUS",
    "AUTH_METHODS",
    "AUTH_MODES",
    "AuthMethod",
    "AuthMode",
    "Principal",
]

AuthMode = Literal["none", "trusted-network", "tokens", "mtls", "tokens+mtls"]
"""How a gRPC port authenticates its callers:

- ``none``: nobody is; every caller is ``anonymous`` and may call everything (the embedded
  default: production sets another mode);
- ``trusted-network``: a proxy in front has authenticated the caller and names it in
  ``x-modelyard-caller`` (the only mode that reads that header);
- ``tokens``: ``authorization: Bearer <token>``, looked up in the tokens file;
- ``mtls``: the subject CN of the client certificate (the port must require one);
- ``tokens+mtls``: a bearer token when the call carries one, else the certificate's CN.
"""

AuthMethod = Literal["token", "mtls", "signature", "trusted-header", "none"]
"""How one principal was established (``signature``: a signed Kafka request)."""

AUTH_MODES: tuple[AuthMode, ...] = get_args(AuthMode)
AUTH_METHODS: tuple[AuthMethod, ...] = get_args(AuthMethod)
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its name and the method that established it."""

    name: str
    auth: AuthMethod

    @classmethod
    def anonymous(cls) -> Principal:
        return _ANONYMOUS


_ANONYMOUS = Principal(ANONYMOUS, "none")
