"""The poison-message rule across restarts (kafka.poison), on files in a temporary folder."""

from __future__ import annotations

from pathlib import Path

from modelyard.kafka.poison import PoisonLedger

TP = ("yard.m.a.1", 0)


def _worker(state: Path) -> PoisonLedger:
    ledger = PoisonLedger(state, "g", max_crashes=2, careful_messages=3)
    ledger.claim([TP])
    return ledger


def test_a_clean_stop_leaves_nothing_and_the_next_worker_is_not_careful(tmp_path: Path) -> None:
    first = _worker(tmp_path)
    assert not first.careful
    first.begin(TP, 5)  # not careful: nothing recorded per message
    first.end()
    first.release()
    assert not list(tmp_path.rglob("*.json"))
    assert not _worker(tmp_path).careful


def test_a_message_in_hand_when_workers_die_twice_is_poison(tmp_path: Path) -> None:
    _worker(tmp_path)  # dies (never released) somewhere in a batch
    second = _worker(tmp_path)
    assert second.careful  # its predecessor died: one message at a time
    second.begin(TP, 7)  # ... and dies handling offset 7
    third = _worker(tmp_path)
    assert third.deaths(TP, 7) == 0  # once may be bad luck
    third.begin(TP, 7)  # dies on it again
    fourth = _worker(tmp_path)
    assert fourth.deaths(TP, 7) == 2
    assert fourth.deaths(TP, 8) == 0


def test_careful_handling_ends_after_its_budget_of_messages(tmp_path: Path) -> None:
    _worker(tmp_path)
    ledger = _worker(tmp_path)
    for offset in range(3):
        assert ledger.careful
        ledger.begin(TP, offset)
        ledger.end()
    assert not ledger.careful


def test_no_state_dir_means_no_rule(tmp_path: Path) -> None:
    ledger = PoisonLedger(None, "g")
    ledger.claim([TP])
    ledger.begin(TP, 1)
    assert not ledger.careful
    assert ledger.deaths(TP, 1) == 0
