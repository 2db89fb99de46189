"""A guard's action on a trip: tried again while it fails in a way that may pass (the broker
slow or away, another writer first), never again after one that will not."""

from __future__ import annotations

import pytest
from modelyard.control import GuardRule
from modelyard.control.changes import ControlError
from modelyard.control.guard_watch import Trip, TripActions
from modelyard.control.topic import ConcurrentChangeError
from modelyard.errors import UnavailableError

TRIP = Trip("sentiment", "2", GuardRule(metric="error_rate", max=0.1), 0.5, 10)


@pytest.fixture(autouse=True)
def _no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("modelyard.control.guard_watch._RETRY_DELAYS_S", (0.0, 0.0, 0.0, 0.0))


def _run(failures: list[Exception]) -> int:
    """Fire a trip whose action raises ``failures`` in turn, then succeeds; how often it ran."""
    calls: list[Trip] = []

    def act(trip: Trip) -> None:
        calls.append(trip)
        if failures:
            raise failures.pop(0)

    actions = TripActions(act)
    actions.fire(TRIP)
    actions.join(10)
    assert actions.tripped("sentiment", "2")
    return len(calls)


def test_an_action_that_fails_for_a_while_is_tried_until_it_lands() -> None:
    failures: list[Exception] = [
        UnavailableError("no ack in 10 s"),
        ConcurrentChangeError("another change first"),
    ]
    assert _run(failures) == 3


def test_an_action_is_tried_a_bounded_number_of_times() -> None:
    assert _run([UnavailableError("broker away")] * 10) == 5


def test_an_action_that_cannot_apply_is_not_tried_again() -> None:
    assert _run([ControlError("sentiment has no shadow 2"), UnavailableError("unused")]) == 1
