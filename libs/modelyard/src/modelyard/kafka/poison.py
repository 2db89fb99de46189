"""The poison-message rule across restarts, keyed by topic, partition and offset.

An exception from a message's content is caught where it is handled. What cannot be caught is a
process that dies on a message (a native crash in a model, the kernel's OOM killer): it stops
before committing, a restart meets the same message first, and the partition is in a crash loop.

This ledger breaks the loop. A worker claims each partition it is assigned in a small file under
the state directory and releases it (deletes the file) when it stops cleanly. A worker that finds
a claim its predecessor never released knows that predecessor died, and handles the partition
carefully for a while: one message at a time, recording the offset in hand before handling it.
When a worker again dies with the same offset in hand, that offset is counted against the
message; at ``max_crashes`` the next worker dead-letters it without handling it, and the
partition moves on. Writes happen once per partition claimed, plus two per message only while
careful, so the rule costs nothing in normal operation.

The files are local: a worker restarted on another machine starts with none (set
``MODELYARD_STATE_DIR`` to a volume that outlives the container, e.g. a pod's emptyDir).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

__all__ = ["PoisonLedger", "default_state_dir"]

log = structlog.get_logger(__name__)

TopicPartition = tuple[str, int]


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/modelyard``, else ``~/.local/state/modelyard``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "modelyard"


@dataclass
class _Claim:
    path: Path
    careful_left: int = 0  # messages still to handle one at a time
    in_hand: int | None = None
    crashes: dict[int, int] = field(default_factory=dict)  # offset -> deaths while in hand


class PoisonLedger:
    """Per consumer group; thread-safe (claims are made on the polling thread, messages may
    finish on another)."""

    def __init__(
        self,
        state_dir: Path | None,
        group: str,
        *,
        max_crashes: int = 2,
        careful_messages: int = 100,
    ) -> None:
        self._dir = state_dir / "poison" / _safe(group) if state_dir is not None else None
        self._max_crashes, self._careful_messages = max_crashes, careful_messages
        self._claims: dict[TopicPartition, _Claim] = {}
        self._lock = threading.Lock()

    @property
    def careful(self) -> bool:
        """Whether any claimed partition is handled one message at a time now."""
        return any(c.careful_left > 0 for c in self._claims.values())

    def claim(self, tps: list[TopicPartition]) -> None:
        """Partitions assigned to this worker: read what a predecessor left, claim them."""
        if self._dir is None:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            for tp in tps:
                self._claims[tp] = claim = self._read(tp)
                self._write(claim)

    def release(self, tps: list[TopicPartition] | None = None) -> None:
        """Partitions given up cleanly (revoked, or a clean stop; None: all): their claims go."""
        with self._lock:
            for tp in list(self._claims) if tps is None else tps:
                claim = self._claims.pop(tp, None)
                if claim is not None:
                    claim.path.unlink(missing_ok=True)

    def deaths(self, tp: TopicPartition, offset: int) -> int:
        """How often workers died with this message in hand, once that reaches the bound: the
        message is poison (0: handle it)."""
        claim = self._claims.get(tp)
        crashes = claim.crashes.get(offset, 0) if claim is not None else 0
        return crashes if crashes >= self._max_crashes else 0

    def begin(self, tp: TopicPartition, offset: int) -> None:
        """About to handle ``offset``: recorded first while the partition is careful."""
        with self._lock:
            claim = self._claims.get(tp)
            if claim is not None and claim.careful_left > 0:
                claim.in_hand = offset
                self._write(claim)

    def end(self) -> None:
        """The message in hand (at most one per careful partition) is done."""
        with self._lock:
            for claim in self._claims.values():
                if claim.in_hand is not None:
                    claim.in_hand = None
                    claim.careful_left -= 1
                    self._write(claim)

    def _read(self, tp: TopicPartition) -> _Claim:
        assert self._dir is not None
        claim = _Claim(self._dir / f"{_safe(tp[0])}.{tp[1]}.json")
        try:
            left: dict[str, Any] = json.loads(claim.path.read_text())
        except FileNotFoundError:
            return claim  # the last owner stopped cleanly, or there was none
        except (OSError, ValueError):
            left = {}
        claim.crashes = {int(k): int(v) for k, v in left.get("crashes", {}).items()}
        in_hand = left.get("in_hand")
        if isinstance(in_hand, int):
            claim.crashes[in_hand] = claim.crashes.get(in_hand, 0) + 1
        claim.careful_left = self._careful_messages
        log.warning(
            "the last worker on this partition died; handling it one message at a time",
            topic=tp[0], partition=tp[1], died_handling=in_hand,
        )  # fmt: skip
        return claim

    def _write(self, claim: _Claim) -> None:
        body = {"in_hand": claim.in_hand, "crashes": claim.crashes}
        tmp = claim.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        tmp.replace(claim.path)  # whole or not at all, whenever the process dies


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
