"""The faust adapter's guard on its table: windows are restored from it only when it is whole."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
