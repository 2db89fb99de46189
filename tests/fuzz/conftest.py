"""The fuzz tier: every test here is marked ``fuzz``; the session ends with the number of cases
each entry point ran. With ``MODELYARD_FUZZ_SAVE=1`` (``make fuzz``) the input of every failing
case is written to ``corpus/<entry point>/`` so it is replayed from then on."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.cases import CASES, FAILED, KNOWN_HITS

CORPUS = Path(__file__).parent / "corpus"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.fuzz)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    yield
    if call.when == "call" and call.excinfo is not None and os.environ.get("MODELYARD_FUZZ_SAVE"):
        for entry_point, data in FAILED.items():
            folder = CORPUS / entry_point
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"crash-{hashlib.sha256(data).hexdigest()[:16]}"
            path.write_bytes(data)
            item.add_report_section("call", "corpus", f"crasher saved to {path}")
    FAILED.clear()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not CASES:
        return
    terminalreporter.section("fuzz cases per entry point")
    for entry_point, count in sorted(CASES.items()):
        terminalreporter.write_line(f"{entry_point:<18} {count:>8}")
    terminalreporter.write_line(f"{'total':<18} {sum(CASES.values()):>8}")
    for known, count in sorted(KNOWN_HITS.items()):  # MODELYARD_FUZZ_KNOWN=skip
        terminalreporter.write_line(f"known crasher, not failed: {known} ({count} cases)")
