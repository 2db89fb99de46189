"""Shared test hygiene: a test must not leave threads or child processes behind."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests.support` is imported as a package from the repo root
    sys.path.insert(0, str(ROOT))

# Long-lived daemon threads that libraries start once per process on purpose.
IGNORED_THREAD_PREFIXES = ("OtelBatch", "OtelPeriodic", "pydevd", "Thread-Monitor")
LEAK_GRACE_S = 3.0  # what is stopping may need a moment to finish; beyond this it is a leak


def _live_children() -> set[int]:
    """Pids whose parent is this process (zombies included: unreaped children are a leak too)."""
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may contain spaces
        if int(fields[1]) == me:
            found.add(int(entry.name))
    return found


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.startswith(IGNORED_THREAD_PREFIXES)
    ]


def _settle(check: Callable[[], object], deadline: float) -> None:
    while check() and time.monotonic() < deadline:
        threading.Event().wait(0.02)  # poll until the condition clears or the grace runs out


@pytest.fixture(autouse=True, scope="session")
def worker_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Partition claims of the workers tests start (kafka.poison) stay in the session's tmp,
    not in the user's state directory."""
    os.environ["MODELYARD_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    yield
    del os.environ["MODELYARD_STATE_DIR"]


@pytest.fixture(autouse=True, scope="session")
def operator_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One keyring for the session, as `modelyard up` makes one: routers and the control CLI
    the tests start verify and sign with it (``tests.support.keys``)."""
    from modelyard.keys import ensure_local_keys  # noqa: PLC0415

    keys = ensure_local_keys(tmp_path_factory.mktemp("keys"))
    names = {"MODELYARD_KEYRING": keys.keyring, "MODELYARD_OPERATOR_KEY": keys.admin_key,
             "MODELYARD_WRITER_KEY": keys.router_key}  # fmt: skip
    os.environ.update({name: str(path) for name, path in names.items()})
    yield
    for name in names:
        del os.environ[name]


@pytest.fixture(autouse=True)
def no_leaked_threads_or_processes() -> Iterator[None]:
    """Fail a test that leaves a new thread alive or a child process unreaped."""
    threads_before = set(threading.enumerate())
    children_before = _live_children()
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    for thread in _new_threads(threads_before):
        thread.join(max(0.0, deadline - time.monotonic()))
    _settle(lambda: _live_children() - children_before, deadline)
    threads = _new_threads(threads_before)
    children = _live_children() - children_before
    assert not threads, f"test left threads running: {[t.name for t in threads]}"
    assert not children, f"test left child processes (unstopped or unreaped): {sorted(children)}"


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """A test that runs a CLI in-process configures structlog for the whole process (its level
    filter included); later tests that capture debug lines must not inherit it."""
    yield
    structlog.reset_defaults()
