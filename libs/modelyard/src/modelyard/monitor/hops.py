"""What the monitor reads from the audit topic: the few fields of a hop record it windows on.

Request and checkpoint records are not windowed (a request's hops say everything per stage);
they parse to None. A value that is not an audit record raises ``DecodeError``: the consuming
adapter counts it and goes on (the audit sink dead-letters it; the monitor only watches).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from modelyard.errors import DecodeError

__all__ = ["Hop", "WindowKey", "parse_hop"]


class WindowKey(NamedTuple):
    """What one window counts: one version of one model in one role at one stage."""

    pipeline: str
    stage: str
    model: str
    version: str
    role: str

    def label(self) -> str:
        """``pipeline/stage/model/version/role``: its id in topic keys and table keys."""
        return "/".join(self)


@dataclass(frozen=True, slots=True)
class Hop:
    """One stage execution, as the monitor sees it."""

    key: WindowKey
    finished_at: float  # unix seconds: the time the window is chosen by
    outcome: str  # "ok" or an error code
    latency_ms: float
    agrees: bool | None = None  # shadow hops: outputs equal to the primary's
    observed: Mapping[str, str | float] = field(default_factory=dict)  # spec `monitor:` values
    request_id: str = ""


def parse_hop(value: bytes) -> Hop | None:
    """The hop in an audit-topic value; None for a request or checkpoint record."""
    try:
        record = json.loads(value)
        if not isinstance(record, dict):
            raise TypeError("not an object")
        if record.get("kind") != "hop":
            return None
        return _hop(record)
    except (ValueError, TypeError, KeyError) as exc:
        raise DecodeError(f"not an audit hop record: {exc!r}") from None


def _hop(record: dict[str, Any]) -> Hop:
    key = WindowKey(
        str(record["pipeline"]), str(record["stage"]), str(record["model"]),
        str(record["version"]), str(record["role"]),
    )  # fmt: skip
    agrees = record.get("agrees")
    observed = record.get("observed") or {}
    return Hop(
        key=key,
        finished_at=datetime.fromisoformat(record["finished_at"]).timestamp(),
        outcome=str(record["outcome"]),
        latency_ms=float(record["latency_ms"]),
        agrees=agrees if isinstance(agrees, bool) else None,
        observed={
            str(k): v for k, v in observed.items()
            if isinstance(v, str) or (isinstance(v, int | float) and not isinstance(v, bool))
        } if isinstance(observed, dict) else {},
        request_id=str(record.get("request_id", "")),
    )  # fmt: skip
