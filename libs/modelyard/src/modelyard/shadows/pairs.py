"""Pairing shadow replies with primary replies on a pipeline's shadow topic (pure, no I/O).

The router sends a shadow copy whose reply goes straight to ``yard.p.<pipeline>.shadow`` and,
when the primary reply of that stage comes back, copies it there with the shadow copy's
dispatch time, input digest and trace (``router/records.py``). Either may arrive first; a pair
becomes one hop record of the shadow execution, with ``agrees`` saying whether the two outputs
match. A side left alone past the TTL is recorded as it is: a primary without a shadow reply is
a shadow that never answered (``no_reply``).

Agreement compares the outputs both replies have: every categorical tensor (BYTES, integers,
booleans) must be equal; when there is none, floating-point outputs must be close
(``rtol=1e-3``). So two language identifiers agree when they name the same language, whatever
their probabilities.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelyard.audit import digest_fields
from modelyard.audit.observe import observe
from modelyard.tensors import as_tensor
from modelyard.wire import Envelope
from modelyard.wire.envelope import unpack_arrays
from modelyard.wire.headers import H

__all__ = ["Pair", "ShadowPairs", "Side", "agrees", "shadow_hop_record"]

Key = tuple[str, str]  # request id, stage


@dataclass(frozen=True)
class Side:
    """One reply on the shadow topic: the envelope, its headers, its Kafka timestamp."""

    envelope: Envelope
    headers: Mapping[str, str]
    timestamp: float  # unix seconds (the producer's CreateTime)
    seen: float = field(default_factory=time.monotonic)
    partition: int = -1  # where it was read: what the auditor may not commit past yet
    offset: int = -1


@dataclass(frozen=True)
class Pair:
    primary: Side | None
    shadow: Side | None


class ShadowPairs:
    """Sides waiting for their other half, oldest first."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        self.ttl_s = ttl_s
        self._waiting: OrderedDict[Key, tuple[str, Side]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, key: Key, role: str, side: Side) -> Pair | None:
        """The pair ``side`` completes, or None while its other half has not arrived."""
        other = self._waiting.get(key)
        if other is None or other[0] == role:  # a redelivered copy replaces the one held
            self._waiting[key] = (role, side)
            return None
        del self._waiting[key]
        halves = {role: side, other[0]: other[1]}
        return Pair(halves.get("primary"), halves.get("shadow"))

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget sides read from ``partitions`` (revoked: their new owner reads them again
        from the last committed offset). Returns how many were dropped."""
        gone = [k for k, (_, side) in self._waiting.items() if side.partition in partitions]
        for key in gone:
            del self._waiting[key]
        return len(gone)

    def expire(self, now: float | None = None) -> list[Pair]:
        """Sides older than the TTL, as pairs with one half missing."""
        limit = (time.monotonic() if now is None else now) - self.ttl_s
        out = []
        while self._waiting:
            key, (role, side) = next(iter(self._waiting.items()))
            if side.seen > limit:
                break
            del self._waiting[key]
            out.append(Pair(side, None) if role == "primary" else Pair(None, side))
        return out


def agrees(primary: Mapping[str, Any], shadow: Mapping[str, Any]) -> bool:
    """Whether the outputs both replies carry match (see the module docstring)."""
    common = sorted(set(primary) & set(shadow))
    if not common:
        return False
    tensors = [(as_tensor(primary[n]), as_tensor(shadow[n])) for n in common]
    categorical = [(a, b) for a, b in tensors if a.dtype.kind not in "fc"]
    if categorical:
        return all(a.shape == b.shape and bool(np.all(a == b)) for a, b in categorical)
    return all(a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-3)) for a, b in tensors)


def shadow_hop_record(
    pipeline: str, pair: Pair, monitored: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, Any] | None:
    """The hop record values (``encode_audit_values("hop", ...)``) of the shadow execution a
    pair describes; None without one. ``monitored``: stage -> the outputs its records observe
    (the spec's ``monitor:``; a shadow's inputs are the primary's, observed there)."""
    primary, shadow = pair.primary, pair.shadow
    known = shadow or primary
    if known is None:
        return None
    reply = shadow.envelope if shadow is not None else None
    finished = shadow.timestamp if shadow is not None else time.time()
    meta = dict(primary.headers) if primary is not None else {}
    sent = float(meta.get(H.SHADOW_SENT_AT) or finished)
    model, _, version = meta.get(H.SHADOW_VERSION, ":").partition(":")
    values = {
        "request_id": known.envelope.request_id, "pipeline": pipeline,
        "caller": known.envelope.caller, "trace_id": meta.get(H.SHADOW_TRACE),
        "stage": known.envelope.stage or "", "model": model, "version": version,
        "role": "shadow", "shadow": True, "attempt": 0, "span_id": meta.get(H.SHADOW_SPAN),
        "dispatched_at": sent, "finished_at": finished,
        "latency_ms": max(0.0, (finished - sent) * 1000),
        "input_digest": meta.get(H.SHADOW_INPUT, ""),
        **_outcome(primary, reply),
    }  # fmt: skip
    if reply is not None:
        values["model"], values["version"] = reply.model or model, reply.version or version
        watched = (monitored or {}).get(values["stage"])
        if watched and reply.error is None:
            named = {n: reply.fields[n] for n in watched if n in reply.fields}
            seen = observe(watched, None, unpack_arrays(named))
            if seen:
                values["observed"] = seen
    return values


def _outcome(primary: Side | None, reply: Envelope | None) -> dict[str, Any]:
    if reply is None:
        return {"outcome": "no_reply", "error": "the shadow version sent no reply",
                "output_digest": None, "agrees": None}  # fmt: skip
    if reply.error is not None:
        return {"outcome": reply.error.code, "error": reply.error.message,
                "output_digest": None, "agrees": False}  # fmt: skip
    comparable = primary is not None and primary.envelope.error is None
    return {
        "outcome": "ok", "error": None, "output_digest": digest_fields(reply.fields),
        "agrees": agrees(primary.envelope.fields, reply.fields) if comparable and primary else None,
    }  # fmt: skip
