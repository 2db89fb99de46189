"""`modelyard send` and `modelyard trace` through click's CliRunner, against the fake router."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from modelyard.cli.main import cli

from tests.support.fake_router import FakeRouter, running_fake_router

pytestmark = pytest.mark.integration

PIPELINE = "echo"


@pytest.fixture
def router(broker: str, unique: str) -> Iterator[FakeRouter]:
    with running_fake_router(broker, unique, PIPELINE) as fake:
        yield fake


def invoke(router: FakeRouter, *args: str) -> tuple[int, str]:
    where = ["--bootstrap", router.bootstrap, "--topic-prefix", router.prefix]
    result = CliRunner().invoke(cli, [*args, *where], catch_exceptions=False)
    return result.exit_code, result.output


def test_send_prints_the_results_and_trace_draws_the_waterfall(
    router: FakeRouter, tmp_path: Path
) -> None:
    page = tmp_path / "page.txt"
    page.write_bytes(b"hello there")
    code, out = invoke(router, "send", PIPELINE, str(page), "--input", "text", "--caller", "eve")
    assert code == 0, out
    assert f"{page}: ok" in out
    assert 'upper: "HELLO THERE"' in out
    assert "length: [11]" in out
    assert "served_by: upper=upper:1 length=length:2" in out
    request_id, trace_id = re.search(r"request (\w+)  trace (\w+)", out).groups()  # type: ignore[union-attr]
    assert router.seen[0].envelope.caller == "eve"
    assert router.seen[0].headers["traceparent"].split("-")[1] == trace_id

    code, out = invoke(router, "trace", request_id)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith(f"request {request_id}  pipeline {PIPELINE}  caller eve  ok")
    assert f"trace {trace_id}" in lines[1]
    hops = [
        line.split()
        for line in lines
        if line.startswith("  upper ") or line.startswith("  length ")
    ]
    assert [(h[0], h[1], h[2], h[3]) for h in hops] == [
        ("upper", "upper:1", "active", "ok"),
        ("upper", "upper:2", "shadow", "ok"),
        ("length", "length:2", "active", "ok"),
    ]
    assert "░" in out  # the shadow hop's bar
    assert "█" in out


def test_send_json_and_failures_exit_1(router: FakeRouter, tmp_path: Path) -> None:
    files = []
    for name, content in (("a", b"fine"), ("b", b"boom")):
        files.append(tmp_path / name)
        files[-1].write_bytes(content)
    code, out = invoke(router, "send", PIPELINE, *map(str, files), "--input", "text", "--json")
    assert code == 1
    ok, failed = (json.loads(line) for line in out.splitlines())
    assert ok["outputs"] == {"upper": ["FINE"], "length": [4]}
    assert ok["error"] is None
    assert failed["error"] == {
        "code": "model",
        "message": "length cannot count 'boom'",
        "stage": "length",
    }


def test_send_text_renders_a_page_image(router: FakeRouter) -> None:
    code, out = invoke(router, "send", PIPELINE, "--text", "Hola", "--input", "image")
    assert code == 0, out
    (seen,) = router.seen
    assert list(seen.envelope.fields) == ["image"]
    assert seen.envelope.fields["image"][0].startswith(b"\x89PNG")


def test_send_finds_the_input_in_the_pipeline_spec(router: FakeRouter, tmp_path: Path) -> None:
    spec = Path(__file__).resolve().parents[2] / "pipelines" / "docs.yaml"
    (tmp_path / f"{PIPELINE}.yaml").write_text(
        spec.read_text().replace("pipeline: docs", f"pipeline: {PIPELINE}")
    )
    page = tmp_path / "page.png"
    page.write_bytes(b"\x89PNG fake")
    code, out = invoke(router, "send", PIPELINE, str(page), "--pipelines", str(tmp_path))
    assert code == 0, out
    assert list(router.seen[0].envelope.fields) == ["image"]


def test_trace_of_an_unknown_request_says_so(router: FakeRouter) -> None:
    code, out = invoke(router, "trace", "no-such-request")
    assert code == 1
    assert "no audit records for request 'no-such-request'" in out
