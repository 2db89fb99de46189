"""Running one case of an entry point: counted, timed, its bytes kept when it fails, and the
known crashers of files awaiting a fix (``KNOWN``) told apart from new ones."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from modelyard.errors import ModelyardError

__all__ = ["CASES", "CASE_BUDGET_S", "FAILED", "KNOWN", "KNOWN_HITS", "allowed", "case"]

CASES: Counter[str] = Counter()  # cases run per entry point in this process (conftest prints it)
FAILED: dict[str, bytes] = {}  # entry point -> the bytes of its last failing case
CASE_BUDGET_S = 10.0  # one case taking longer than this is a hang

# Crashers found whose fix has not landed yet: with
# MODELYARD_FUZZ_KNOWN=skip they are counted in KNOWN_HITS instead of failing the case, so a
# long run can look past them for new ones. (entry point or "*", exception type, message regex)
KNOWN: list[tuple[str, type[BaseException], str]] = [
    # none open: add (entry point, exception type, message regex) while a found crasher's fix is
    # pending
]
KNOWN_HITS: Counter[str] = Counter()


def _known(entry_point: str, exc: BaseException) -> bool:
    if os.environ.get("MODELYARD_FUZZ_KNOWN") != "skip":
        return False
    for where, kind, pattern in KNOWN:
        if where in ("*", entry_point) and isinstance(exc, kind) and re.search(pattern, str(exc)):
            KNOWN_HITS[f"{entry_point}: {pattern}"] += 1
            return True
    return False


@contextlib.contextmanager
def case(entry_point: str, data: Callable[[], bytes]) -> Iterator[None]:
    """Count a case; fail it when it takes longer than CASE_BUDGET_S (a hang). The bytes of a
    failing case (``data()``, as ``ENTRY_POINTS[entry_point]`` reads them) go to FAILED."""
    CASES[entry_point] += 1
    started = time.monotonic()
    try:
        yield
        took = time.monotonic() - started
        assert took < CASE_BUDGET_S, f"{entry_point}: one case took {took:.1f}s"
    except BaseException as exc:
        if _known(entry_point, exc):
            return
        FAILED[entry_point] = data()
        raise


def allowed(call: Callable[[], Any]) -> Any:
    """``call()``, or None when it raised a ModelyardError (the allowed refusal)."""
    try:
        return call()
    except ModelyardError:
        return None
