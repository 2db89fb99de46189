"""Triton's perf_analyzer, unchanged, measuring a real stage's OIP gRPC server on loopback.

perf_analyzer reads the model's metadata, configuration and statistics before it measures, so
this is the test of Triton's model configuration, statistics and repository index extensions
as a stock C++ client uses them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tritonclient.grpc as triton

from bench.perf_analyzer import HOME, perf_analyzer_binary, run_perf_analyzer
from tests.support.stage import running_stage

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def perf_analyzer() -> Path:
    binary = perf_analyzer_binary()
    if binary is None:
        reason = (
            f"{HOME} missing: `make setup` fetches perf_analyzer (scripts/fetch_perf_analyzer.sh)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


def test_perf_analyzer_measures_a_stage(
    perf_analyzer: Path, reference_repo: Path, tmp_path: Path
) -> None:
    args = ("--no-kafka", "--bootstrap", "127.0.0.1:1")
    with running_stage("sentiment:1", reference_repo, *args, timeout=120) as (_, ready):
        (result,) = run_perf_analyzer(ready["grpc"], "sentiment", [1], tmp_path, interval_ms=1000)
        client = triton.InferenceServerClient(ready["grpc"])
        stats = client.get_inference_statistics("sentiment", as_json=True)["model_stats"][0]
        config = client.get_model_config("sentiment", as_json=True)["config"]
        index = client.get_model_repository_index(as_json=True)["models"]
        client.close()
    assert result.concurrency == 1
    assert result.rate > 0
    assert 0 < result.p50_ms <= result.p99_ms
    # every request perf_analyzer sent succeeded, and the stage counted it
    inference = stats["inference_stats"]
    assert int(inference["success"]["count"]) > 0
    assert "count" not in inference.get("fail", {})
    assert int(stats["inference_count"]) == int(inference["success"]["count"])
    assert int(inference["compute_infer"]["ns"]) > 0
    # sentiment:1 takes one text per request: no batch axis, the manifest's shapes whole
    assert config.get("max_batch_size", 0) == 0
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("text", "TYPE_STRING", ["1"])
    ]
    assert index == [{"name": "sentiment", "version": "1", "state": "READY"}]
