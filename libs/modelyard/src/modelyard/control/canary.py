"""Sticky weighted choice between a stage's active and canary versions, and shadow sampling.

Both map a key to a number in [0, 1) with blake2b, so every router instance makes the same
choice without coordination. The scope (``"<pipeline>/<stage>"``) is hashed in, so a caller's
draw on one stage is independent of its draw on another. Raising a canary's weight only moves
more keys to it: a key on the canary stays there while the weight does not drop. Shadow sampling
hashes the request id in a separate domain, so it is independent of the canary draw.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from modelyard.control.changes import ControlError
from modelyard.control.routing import StageRouting

__all__ = ["Role", "choose_version", "should_shadow", "unit_hash"]

Role = Literal["active", "canary"]


def unit_hash(*parts: str) -> float:
    """A stable, uniform number in [0, 1) for ``parts`` (same parts, same number, everywhere)."""
    data = "\x1f".join(parts).encode()  # unit separator: ("a", "bc") differs from ("ab", "c")
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose_version(state: StageRouting, sticky_key: str, *, scope: str) -> tuple[str, Role]:
    """The version to route ``sticky_key`` to on the stage ``scope`` names, and its role."""
    if state.active is None:
        raise ControlError(f"{scope}: no active version; roll one out first")
    canary = state.canary
    if canary is not None and unit_hash("canary", scope, sticky_key) < canary.weight:
        return canary.version, "canary"
    return state.active, "active"


def should_shadow(state: StageRouting, request_id: str, *, scope: str) -> bool:
    """Whether this request's input is mirrored to the shadow version (if there is one)."""
    shadow = state.shadow
    return shadow is not None and unit_hash("shadow", scope, request_id) < shadow.sample_rate
