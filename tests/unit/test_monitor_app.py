"""The faust adapter: windows are restored from its table only when it is whole, and its
consumer commits each acked offset once, however faust came to ack it twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

from faust.types import TP
from modelyard.monitor.app import MonitorApp
from modelyard.monitor.metrics import MonitorMetrics
from modelyard.monitor.settings import MonitorSettings
from prometheus_client import CollectorRegistry


def _monitor(tmp_path: Path) -> MonitorApp:
    # faust builds its clients lazily: nothing here reaches the (absent) broker
    settings = MonitorSettings(bootstrap="127.0.0.1:1", state_dir=tmp_path)
    return MonitorApp(settings, 2, MonitorMetrics(CollectorRegistry()))


def test_no_window_is_restored_while_faust_replays_the_changelog(tmp_path: Path) -> None:
    monitor = _monitor(tmp_path)
    monitor.app.tables.recovery.completed.set()  # the first recovery ended: it stays set
    monitor.app.in_recovery = True  # a rebalance's replay, with the table older than its end
    assert not monitor._settled()
    asyncio.run(monitor._tick())
    assert monitor._windows == {}  # nothing restored from the half-replayed table
    monitor.app.in_recovery = False
    assert monitor._settled()


def test_no_window_is_restored_during_a_rebalance_or_before_the_first_recovery(
    tmp_path: Path,
) -> None:
    monitor = _monitor(tmp_path)
    assert not monitor._settled()  # the first recovery has not ended
    monitor.app.tables.recovery.completed.set()
    monitor.app.rebalancing = True
    assert not monitor._settled()


# faust's commit over repeated acked offsets ------------------------------------------------
_TP = TP("audit", 0)


def _consumer(tmp_path: Path, committed: int, acked: list[int]) -> Any:
    """The monitor's faust consumer (built, never started), at ``committed`` with ``acked``."""
    consumer = cast(Any, _monitor(tmp_path).app.consumer)
    consumer._committed_offset[_TP] = committed
    consumer._acked[_TP] = list(acked)
    consumer._acked_index[_TP] = set(acked)
    return consumer


def test_a_gap_over_offsets_acked_already_commits_past_them_at_once(tmp_path: Path) -> None:
    """A jump from 11 to 15 after a seek back, with 12..14 read and acked before it: faust's own
    merge puts 12..14 in twice and commits 13 (then one more a commit)."""
    consumer = _consumer(tmp_path, committed=10, acked=[10, 11, 12, 13, 14, 15])
    consumer._gap[_TP].addi(12, 15)  # what faust adds for the jump
    assert consumer._new_offset(_TP) == 16
    assert not consumer._gap[_TP]


def test_repeated_and_stale_acked_offsets_count_once(tmp_path: Path) -> None:
    consumer = _consumer(tmp_path, committed=20, acked=[18, 19, 20, 20, 21, 21, 22])
    assert consumer._new_offset(_TP) == 23


def test_a_hole_still_holds_the_commit_back(tmp_path: Path) -> None:
    """An offset never acked (25) keeps the commit below it, as in faust."""
    consumer = _consumer(tmp_path, committed=23, acked=[23, 24, 26, 27])
    assert consumer._new_offset(_TP) == 25
