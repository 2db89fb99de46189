"""The one exception tree of modelyard and the policy table that maps it to transports.

Every failure a stage can meet is one of three kinds:

- ``RetryableError``: transient (an engine restarting, the broker busy). Retried with jittered
  backoff a bounded number of times, then treated as poison.
- ``PoisonError``: this input can never succeed (cannot be decoded, fails validation, makes the
  model raise). Dead-lettered with its original bytes; the caller gets an error result.
- ``FatalError``: the process cannot go on (bad config, corrupted artifacts). It stops without
  committing, so nothing is lost.

``POLICY`` is the single table that says what each kind means on Kafka and on gRPC; adapters look
errors up there instead of deciding case by case.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "POLICY",
    "ArtifactIntegrityError",
    "ConfigError",
    "DeadlineExceededError",
    "DecodeError",
    "Disposition",
    "ErrorPolicy",
    "FatalError",
    "ModelError",
    "ModelyardError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PoisonError",
    "RetryableError",
    "UnauthenticatedError",
    "UnavailableError",
    "ValidationError",
    "error_class",
    "policy_for",
]


class ModelyardError(Exception):
    """Root of every error modelyard raises on purpose."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RetryableError(ModelyardError):
    """A transient failure: the same input may succeed if tried again later."""

    code = "unavailable"


class UnavailableError(RetryableError):
    """A dependency (engine subprocess, broker) is restarting or unreachable."""


class OverloadedError(RetryableError):
    """The stage is at capacity; try again later."""

    code = "overloaded"


class PoisonError(ModelyardError):
    """This input can never succeed: dead-letter it and answer the caller with an error."""

    code = "invalid"


class DecodeError(PoisonError):
    """The bytes are not a valid envelope or OIP v2 JSON request."""

    code = "decode"


class ValidationError(PoisonError):
    """The request decoded but does not match the model's inputs (name, dtype, shape)."""

    code = "validation"


class PayloadTooLargeError(ValidationError):
    """A request exceeds a configured limit (bytes, pixels, text length)."""

    code = "too_large"


class ModelError(PoisonError):
    """The model raised while predicting on this input."""

    code = "model"


class DeadlineExceededError(ModelyardError):
    """The request's deadline passed before it could be served."""

    code = "deadline"


class UnauthenticatedError(ModelyardError):
    """The caller's credentials name no known principal (e.g. an unknown bearer token)."""

    code = "unauthenticated"


class PermissionDeniedError(ModelyardError):
    """The caller is authenticated but not allowed this pipeline or model."""

    code = "permission_denied"


class FatalError(ModelyardError):
    """The process cannot continue; stop without committing so nothing is lost."""

    code = "fatal"


class ConfigError(FatalError):
    """Settings or a manifest are invalid."""

    code = "config"


class ArtifactIntegrityError(FatalError):
    """A model artifact's sha256 does not match its manifest."""

    code = "integrity"


class Disposition(enum.Enum):
    """What the Kafka adapter does with a message whose processing failed."""

    RETRY = "retry"  # back off and try again, up to the retry budget
    DEAD_LETTER = "dead_letter"  # DLQ with original bytes + error reply to the caller
    REPLY_ERROR = "reply_error"  # error reply only (nothing wrong with the bytes)
    STOP = "stop"  # stop the consumer without committing


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    disposition: Disposition
    grpc_status: str  # name of a grpc.StatusCode member; kept as text so the core needs no grpc


POLICY: dict[type[ModelyardError], ErrorPolicy] = {
    RetryableError: ErrorPolicy(Disposition.RETRY, "UNAVAILABLE"),
    OverloadedError: ErrorPolicy(Disposition.RETRY, "RESOURCE_EXHAUSTED"),
    PoisonError: ErrorPolicy(Disposition.DEAD_LETTER, "INVALID_ARGUMENT"),
    PayloadTooLargeError: ErrorPolicy(Disposition.DEAD_LETTER, "RESOURCE_EXHAUSTED"),
    ModelError: ErrorPolicy(Disposition.DEAD_LETTER, "INTERNAL"),
    DeadlineExceededError: ErrorPolicy(Disposition.REPLY_ERROR, "DEADLINE_EXCEEDED"),
    # refused requests are kept (their bytes are the evidence) and answered, never routed
    UnauthenticatedError: ErrorPolicy(Disposition.DEAD_LETTER, "UNAUTHENTICATED"),
    PermissionDeniedError: ErrorPolicy(Disposition.DEAD_LETTER, "PERMISSION_DENIED"),
    FatalError: ErrorPolicy(Disposition.STOP, "INTERNAL"),
    ModelyardError: ErrorPolicy(Disposition.DEAD_LETTER, "INTERNAL"),
}


def policy_for(error: BaseException) -> ErrorPolicy:
    """The policy of the most specific class of ``error`` in ``POLICY``.

    Exceptions from outside modelyard are treated as model failures: poison, never retried.
    """
    if not isinstance(error, ModelyardError):
        return POLICY[ModelError]
    for cls in type(error).__mro__:
        if cls in POLICY:
            return POLICY[cls]
    return POLICY[ModelyardError]


def error_class(code: str) -> type[ModelyardError]:
    """The exception class of an error ``code`` read off the wire (``ErrorInfo.code``).

    Where several classes share a code the most general wins (``unavailable`` is
    RetryableError); an unknown code is a plain ModelyardError (INTERNAL on gRPC).
    """
    return _by_code().get(code, ModelyardError)  # walked per call: errors are rare, the tree small


def _by_code() -> dict[str, type[ModelyardError]]:
    found: dict[str, type[ModelyardError]] = {}
    pending: list[type[ModelyardError]] = [ModelyardError]
    while pending:  # breadth first: a parent is seen before the children that share its code
        cls = pending.pop(0)
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found
