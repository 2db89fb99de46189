"""A request's audit records as a terminal waterfall (what ``modelyard trace`` prints).

Pure: records in, lines out. The request line comes first (id, pipeline, caller, outcome, total
latency, trace id, served_by), then one line per hop in dispatch order with its offset from the
request's arrival and a bar for its duration. Shadow hops are drawn with a lighter bar and
marked in the role column. A hop recorded twice (the shadow auditor records at least once)
is drawn once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from modelyard.audit.records import HopRecord, RequestRecord

__all__ = ["render_waterfall"]

_SOLID, _SHADOW = "█", "░"
_COLUMNS = (
    f"  {'stage':<12} {'model:version':<16} {'role':<8} {'outcome':<11} {'start':>8} {'ms':>8}"
)


def render_waterfall(records: Sequence[HopRecord | RequestRecord], width: int = 40) -> list[str]:
    """The waterfall of one request's records (hops and at most one request record)."""
    hops = sorted(_distinct(records), key=lambda h: (h.dispatched_at, h.shadow))
    requests = [r for r in records if isinstance(r, RequestRecord)]
    request = requests[-1] if requests else None  # a re-emitted record says the same thing
    if request is None and not hops:
        return []
    origin = request.received_at if request else hops[0].dispatched_at
    ends = [h.finished_at for h in hops] + ([request.finished_at] if request else [])
    total_ms = max(1e-3, *(_ms(origin, end) for end in ends))
    lines = _header(request, hops, total_ms)
    lines.append(f"{_COLUMNS}   |{'0 ms':<{width - 8}}{total_ms:>6.0f} ms|")
    for hop in hops:
        lines.extend(_hop_lines(hop, _ms(origin, hop.dispatched_at), total_ms, width))
    if any(h.shadow for h in hops):
        lines.append(
            f"  {_SOLID} primary path   {_SHADOW} shadow copy (audited, never flows downstream)"
        )
    return lines


def _distinct(records: Sequence[HopRecord | RequestRecord]) -> list[HopRecord]:
    """The hop records, the first of each execution only."""
    seen: dict[tuple[object, ...], HopRecord] = {}
    for r in records:
        if isinstance(r, HopRecord):
            key = (r.stage, r.role, r.model, r.version, r.attempt, r.dispatched_at)
            seen.setdefault(key, r)
    return list(seen.values())


def _header(request: RequestRecord | None, hops: list[HopRecord], total_ms: float) -> list[str]:
    first = request or hops[0]
    outcome = first.outcome if request else "in flight?"
    lines = [
        f"request {first.request_id}  pipeline {first.pipeline}  "
        f"caller {first.caller or '-'}  {outcome}  {total_ms:.1f} ms"
    ]
    details = [f"trace {first.trace_id or '-'}"]
    if request is not None:
        details.append(f"received {request.received_at:%Y-%m-%d %H:%M:%S.%f}"[:-3] + " UTC")
    lines.append("  " + "  ".join(details))
    if request is None:
        lines.append("  no request record yet: the request is still in flight, or its router")
        lines.append("  stopped before finishing it")
        return lines
    served = " ".join(f"{stage}={ref}" for stage, ref in request.served_by.items()) or "-"
    skipped = f"  (skipped: {', '.join(request.skipped)})" if request.skipped else ""
    lines.append(f"  served_by {served}{skipped}")
    if request.error:
        lines.append(f"  ! {request.outcome}: {request.error}")
    return lines


def _hop_lines(hop: HopRecord, start_ms: float, total_ms: float, width: int) -> list[str]:
    role = f"{hop.role}*" if hop.shadow and hop.role != "shadow" else hop.role
    ref = f"{hop.model}:{hop.version}"
    retry = f"  (attempt {hop.attempt})" if hop.attempt else ""
    line = (
        f"  {hop.stage:<12} {ref:<16} {role:<8} {hop.outcome:<11} "
        f"{start_ms:8.1f} {hop.latency_ms:8.1f}   |{_bar(hop, start_ms, total_ms, width)}|{retry}"
    )
    lines = [line]
    if hop.error:
        lines.append(f"  {'':<12} ! {hop.error}")
    return lines


def _bar(hop: HopRecord, start_ms: float, total_ms: float, width: int) -> str:
    begin = min(width - 1, int(_share(start_ms, total_ms) * width))
    length = max(1, min(width - begin, round(_share(hop.latency_ms, total_ms) * width)))
    glyph = _SHADOW if hop.shadow else _SOLID
    return (" " * begin + glyph * length).ljust(width)


def _share(part: float, whole: float) -> float:
    """``part / whole`` within [0, 1]: records written on several machines may disagree (a hop
    dispatched centuries before its request arrived), and the bar still has to fit."""
    return min(max(part / whole, 0.0), 1.0)


def _ms(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() * 1000
