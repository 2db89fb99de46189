"""One-line, human-readable descriptions of changes (CLI tables, history, error messages)."""

from __future__ import annotations

from modelyard.control.changes import (
    CanaryChange,
    Change,
    GuardsChange,
    Reassert,
    ReleaseRollback,
    ReleaseSave,
    Rollout,
    ShadowChange,
    Withdraw,
)

__all__ = ["describe_change", "percent"]


def percent(share: float) -> str:
    """``0.1`` -> ``"10%"``, ``0.125`` -> ``"12.5%"``."""
    return f"{share * 100:.4g}%"


def describe_change(change: Change) -> str:
    """``"rollout translate -> 2"``, ``"canary langid 2 @ 10%"``, ``"release rollback r1"``..."""
    if isinstance(change, ReleaseSave):
        return f"release save {change.release}"
    if isinstance(change, ReleaseRollback):
        return f"release rollback {change.release}"
    if isinstance(change, Reassert):
        return "reassert (after a lost race)"
    return f"{change.type} {change.stage}{_detail(change)}"


def _detail(change: Change) -> str:
    match change:
        case Rollout():
            return f" -> {change.version}"
        case CanaryChange():
            return _share(change.version, change.weight)
        case ShadowChange():
            return _share(change.version, change.sample_rate)
        case GuardsChange():
            return f": {len(change.rules)} rule(s)"
        case Withdraw():
            return f" {change.version}"
    return ""


def _share(version: str | None, share: float) -> str:
    return " cleared" if version is None else f" {version} @ {percent(share)}"
