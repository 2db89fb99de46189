"""Principals: who calls a router or a stage, how that was proven, and what they may call.

- gRPC: :class:`Authenticator` per :data:`AuthMode` (bearer tokens from a tokens file of
  sha256 digests, mTLS subject CNs, or a trusted network's caller header);
- Kafka: requests signed with the caller's HMAC key (:func:`sign_request`,
  :func:`verify_request`; the bytes are specified in docs/wire-format.md);
- settings mixins and the files (tokens, callers) operators manage with ``modelyard tokens`` and
  ``modelyard callers``. docs/security.md tells the whole story.
"""

from modelyard.auth.authenticator import (
    AUTHORIZATION_KEY,
    CALLER_KEY,
    Authenticator,
    Credentials,
    bearer_metadata,
    credentials_of,
)
from modelyard.auth.callers import CallerKey, CallerKeys, new_caller_key
from modelyard.auth.grants import ANY, Grant
from modelyard.auth.principal import (
    ANONYMOUS,
    AUTH_METHODS,
    AUTH_MODES,
    AuthMethod,
    AuthMode,
    Principal,
)
from modelyard.auth.settings import AuthSettings, GrpcAuthSettings
from modelyard.auth.signing import (
    AUTH_HEADER,
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    canonical_request,
    fields_digest_of,
    sign_request,
    verify_request,
)
from modelyard.auth.tokens import TokenEntry, TokenTable, hash_token, new_token

__all__ = [
    "ANONYMOUS",
    "ANY",
    "AUTHORIZATION_KEY",
    "AUTH_HEADER",
    "AUTH_METHODS",
    "AUTH_MODES",
    "CALLER_KEY",
    "KEY_ID_HEADER",
    "SIGNATURE_HEADER",
    "AuthMethod",
    "AuthMode",
    "AuthSettings",
    "Authenticator",
    "CallerKey",
    "CallerKeys",
    "Credentials",
    "Grant",
    "GrpcAuthSettings",
    "Principal",
    "TokenEntry",
    "TokenTable",
    "bearer_metadata",
    "canonical_request",
    "credentials_of",
    "fields_digest_of",
    "hash_token",
    "new_caller_key",
    "new_token",
    "sign_request",
    "verify_request",
]
