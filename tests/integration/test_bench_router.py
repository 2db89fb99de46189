"""`make bench`'s router part, run small: it starts the services as `modelyard up` would (keyring,
writer key, signed control changes) and every burst mode finishes. Nothing here times anything;
it keeps the benchmark from breaking unseen when what a service needs to start changes (the
router refusing to start without a keyring once left the whole router part failing)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from modelyard.broker import EmbeddedBroker
from modelyard.repository.build import BuildContext

from bench.noop_repo import NOOP_MANIFEST, write_noop_repo
from bench.router_bench import BURST_MODES, Bench, measure_bursts

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.own_brokers]

REQUESTS = 200


def test_every_burst_mode_of_the_router_bench_answers_every_request(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_noop_repo(repo)
    BuildContext(root=repo, cache=repo / ".cache").write_version(
        {**NOOP_MANIFEST, "version": "2"}, files={}
    )
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        bench = Bench(broker.bootstrap, tmp_path, repo, f"t{uuid.uuid4().hex[:6]}", {})
        results = measure_bursts(bench, REQUESTS, rounds=1)  # raises unless all are answered
    assert set(results) == set(BURST_MODES)
    for mode, (burst,) in results.items():
        assert burst.rate > 0, mode
        assert "router" in burst.cpu_us, f"{mode}: the router's CPU was not measured"
