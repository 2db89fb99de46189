"""The monitor's guard on the whole stack: real routers, real sentiment workers, the monitor
`modelyard up` runs. A canary that is a copy of the active VADER version is judged window after
window and kept; a canary that answers "positive" to everything is flagged in the first window
it is judged in and withdrawn, by a control record the monitor's own key signs, naming drift.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from modelyard.control import CanaryChange, ControlRecord, GuardsChange, Rollout
from modelyard.control.routing import GuardRule
from modelyard.control.topic import read_records, write_change
from modelyard.gateway import BlockingGateway, Submission
from modelyard.monitor.hops import WindowKey
from modelyard.monitor.settings import monitor_topic
from modelyard.monitor.show import read_assessments
from modelyard.repository.build import BuildContext
from modelyard.stack import Stack
from modelyard.wire import Envelope

from tests.support.keys import admin, keys_dir
from tests.support.models import copy_version
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 10
SPEC = """\
pipeline: opinions
version: 1
inputs:
  text: {datatype: BYTES, shape: [1]}
stages:
  sentiment:
    model: sentiment
    inputs: {text: request.text}
    monitor: {label: categorical, scores: numeric, input.text: length}
outputs:
  label: sentiment.label
# a slow machine may spread one send over two or three 10 s windows: judge on fewer values,
# and bound PSI above its small-sample noise (about (bins - 1) (1/n + 1/m): 0.27 for 9 text
# lengths at 60 + 60 values); the always-positive label's PSI is about 6
drift: {min_samples: 20, psi: 1.0}
"""
GOOD = ("I love this, it is wonderful", "What a great and happy day", "Brilliant work, thanks")
BAD = ("This is terrible and sad", "I hate waiting, awful service", "A horrible, broken mess")
PLAIN = ("The meeting is at noon", "The report has four pages", "Trains leave from platform two")


class Lines:
    """What the stack's children printed, by child."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, name: str, line: str) -> None:
        self.lines.append((name, line))

    def of(self, name: str) -> str:
        return "".join(line for n, line in list(self.lines) if n == name)[-6000:]


LINES = Lines()


@pytest.fixture
def stack(broker: str, reference_repo: Path, tmp_path: Path) -> Iterator[Stack]:
    ctx = BuildContext(root=tmp_path / "models", cache=tmp_path / ".cache")
    vader = reference_repo / "sentiment" / "1"
    copy_version(ctx, vader, "1")
    copy_version(ctx, vader, "8")  # the same model under another version
    copy_version(ctx, vader, "9", entrypoint="tests.support.models:AlwaysPositive")
    spec = tmp_path / "opinions.yaml"
    spec.write_text(SPEC)
    prefix = f"mg{int(time.time() * 1000) % 10**8}"
    rules = (GuardRule(metric="drift_psi", max=1.0, min_requests=20),)
    for change in (Rollout(stage="sentiment", version="1"),
                   GuardsChange(stage="sentiment", rules=rules)):  # fmt: skip
        write_change(broker, "opinions", change, signer=admin(), prefix=prefix)
    env = {"PYTHONPATH": str(ROOT), "MODELYARD_WINDOW_S": str(WINDOW_S), "MODELYARD_GRACE_S": "1",
           "MODELYARD_SETTLE_S": "1", "MODELYARD_CANARY_KEY": "request"}  # fmt: skip
    with Stack(pipelines=(spec,), repository=ctx.root, bootstrap=broker, topic_prefix=prefix,
               partitions=2, router_port=0, log_level="WARNING", keys_dir=keys_dir(),
               child_env=env, cwd=ROOT, on_line=LINES) as running:  # fmt: skip
        yield running
    assert running.failure is None


def _send(gateway: BlockingGateway, n: int, tag: str) -> list[Envelope]:
    rng = random.Random(tag)
    texts = [rng.choice(GOOD + BAD + PLAIN) for _ in range(n)]
    subs = [
        Submission({"text": [t.encode()]}, request_id=f"{tag}-{i}") for i, t in enumerate(texts)
    ]
    results = gateway.submit_many("opinions", subs)
    assert all(isinstance(r, Envelope) and r.error is None for r in results), results[:3]
    return [r for r in results if isinstance(r, Envelope)]


def _canary_windows(stack: Stack, version: str) -> list[dict[str, Any]]:
    key = WindowKey("opinions", "sentiment", "sentiment", version, "canary")
    topic = monitor_topic(stack.settings.topic_prefix)
    judged = read_assessments(stack.bootstrap, topic, timeout_s=5)
    return [record for (k, _), record in sorted(judged.items()) if k == key]


def _records(stack: Stack) -> list[ControlRecord]:
    positioned = read_records(stack.bootstrap, prefix=stack.settings.topic_prefix)
    return [p.record for p in positioned if p.record.key == "opinions"]


def _canary(stack: Stack) -> str | None:
    records = _records(stack)
    canary = records[-1].state.stage("sentiment").canary if records else None
    return canary.version if canary is not None else None


def test_a_drifting_canary_is_withdrawn_and_an_identical_one_is_kept(stack: Stack) -> None:
    assert "monitor" in stack.services, stack.services
    prefix, bootstrap = stack.settings.topic_prefix, stack.bootstrap
    with BlockingGateway(bootstrap, topic_prefix=prefix, default_timeout_s=60) as gateway:
        write_change(bootstrap, "opinions", CanaryChange(stage="sentiment", version="8",
                     weight=0.5), signer=admin(), prefix=prefix)  # fmt: skip
        stack.wait_worker("sentiment:8", timeout_s=120)
        served = _send(gateway, 240, "same")
        assert {r.served_by["sentiment"] for r in served} == {"sentiment:1", "sentiment:8"}
        _wait(stack, lambda: any(w["drift"] for w in _canary_windows(stack, "8")),
              "a judged window of the identical canary", "8")  # fmt: skip
        kept = _canary_windows(stack, "8")
        assert not any(w["drifted"] for w in kept), kept
        judged = {d["field"] for w in kept for d in w["drift"]}
        assert judged == {"label", "scores.0", "scores.1", "scores.2", "input.text"}, kept
        assert _canary(stack) == "8"
        write_change(bootstrap, "opinions", CanaryChange(stage="sentiment", version="9",
                     weight=0.5), signer=admin(), prefix=prefix)  # fmt: skip
        stack.wait_worker("sentiment:9", timeout_s=120)
        sent_at = time.time()
        served = _send(gateway, 240, "drift")
        assert any(r.served_by["sentiment"] == "sentiment:9" for r in served)
        _wait(stack, lambda: _canary(stack) is None, "the drifting canary withdrawn", "9")
    withdrawn = _records(stack)[-1]
    assert withdrawn.change.type == "withdraw"
    assert withdrawn.actor == "monitor"
    assert "drift_psi" in withdrawn.reason
    assert "canary sentiment sentiment:9" in withdrawn.reason
    flagged = [w for w in _canary_windows(stack, "9") if w["drifted"]]
    assert flagged, _canary_windows(stack, "9")
    # flagged in the window its traffic went to (or the next, when the sends straddled two)
    assert min(str(w["start"]) for w in flagged) <= _iso_window(sent_at + WINDOW_S)


def _wait(stack: Stack, condition: Callable[[], object], what: str, version: str) -> None:
    """``wait_until`` for up to three windows and a margin; on time-out, what the monitor
    judged of ``version`` and what it printed."""
    try:
        wait_until(condition, what, 3 * WINDOW_S + 60)
    except AssertionError as exc:
        drift = [w["drift"] for w in _canary_windows(stack, version)]
        raise AssertionError(f"{exc}\n{drift}\n{LINES.of('monitor')}") from None


def _iso_window(ts: float) -> str:
    from modelyard.monitor.summary import iso  # noqa: PLC0415

    return iso(ts // WINDOW_S * WINDOW_S)
