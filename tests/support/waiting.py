"""Waiting for a condition in tests: polled, bounded, and named when it never comes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

POLL_S = 0.05


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 60.0) -> None:
    """Return once ``condition()`` is true; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()  # never set: a wait that reads as one, not a sleep
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        pause.wait(POLL_S)
