"""Which offsets of one audit partition the monitor has counted, kept with its windows.

Mostly a single number, the next offset to count: below it, a record read again is skipped.
But a consumer does not always hand records over in order: after a rebalance faust can deliver
a record fetched before it ahead of the lower ones it cleared from its queues (faust-streaming
#221). So a record that skips ahead leaves a *hole*, the offsets between, and a record read
later inside a hole is counted, not skipped. Most holes are never filled: a transaction's
commit marker takes an offset no record has, and a compacted or deleted record leaves a gap.
Only the newest ``MAX_HOLES`` are kept; a hole that old is not waiting for anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_HOLES", "CountedOffsets"]

MAX_HOLES = 64


@dataclass(slots=True)
class CountedOffsets:
    """``next``: the lowest offset above every counted one; ``holes``: ``[start, end)`` ranges
    below it never counted, oldest first."""

    next: int = 0
    holes: list[tuple[int, int]] = field(default_factory=list)

    def first_reading(self, offset: int) -> bool:
        """Whether the record at ``offset`` is read for the first time (and now counted)."""
        if offset >= self.next:
            if offset > self.next:
                self._add_hole(self.next, offset)
            self.next = offset + 1
            return True
        return self._fill(offset)

    def to_json(self) -> dict[str, Any]:
        return {"next": self.next, "holes": [[start, end] for start, end in self.holes]}

    @classmethod
    def from_json(cls, saved: Any) -> CountedOffsets:
        """What ``to_json`` gave, or a bare number (the next offset: saved before holes were)."""
        if isinstance(saved, int):
            return cls(saved)
        holes = [(int(start), int(end)) for start, end in saved.get("holes", ())]
        return cls(int(saved["next"]), holes)

    def _add_hole(self, start: int, end: int) -> None:
        self.holes.append((start, end))
        del self.holes[:-MAX_HOLES]

    def _fill(self, offset: int) -> bool:
        for i, (start, end) in enumerate(self.holes):
            if start <= offset < end:
                self.holes[i : i + 1] = [(s, e) for s, e in ((start, offset), (offset + 1, end))
                                         if s < e]  # fmt: skip
                del self.holes[:-MAX_HOLES]
                return True
        return False
