"""A real OpenTelemetry Collector for the tests: OTLP/gRPC in on a loopback port the OS chose,
every span out to a file as OTLP JSON lines (the contrib file exporter), read back as ``Span``s.

The binary comes from ``scripts/otelcol.sh`` (built once from the Go module proxy by
``make setup``, cached under .cache/otelcol); without it the tests fail, saying so. The
collector's port is read from ``/proc/<pid>/net/tcp``: the one socket it listens on, which is
also its readiness.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from tests.support.waiting import wait_until

__all__ = ["OtelCollector", "Span", "draw_trace", "otelcol_binary"]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "otelcol.sh"
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp

CONFIG = """\
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
exporters:
  file:
    path: {path}
    format: json
service:
  telemetry:
    metrics: {{level: none}}  # no metrics server: the OTLP receiver is its only listening socket
    logs: {{level: warn}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [file]}}
"""


@pytest.fixture(scope="session")
def otelcol_binary() -> Path:
    """The collector binary ``make setup`` built; the test fails (never skips) without it."""
    built = subprocess.run(
        ["bash", str(SCRIPT), "--path"], capture_output=True, text=True, timeout=30, check=False
    )
    if built.returncode != 0:
        pytest.fail(built.stderr.strip())
    return Path(built.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Span:
    """One exported span: ids in lower-case hex, ``parent`` empty for a root."""

    trace_id: str
    span_id: str
    parent: str
    name: str
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)


class OtelCollector:
    """The collector as a child process, in ``workdir``; ``endpoint`` once started."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.output = workdir / "spans.jsonl"
        self._config = workdir / "otelcol.yaml"
        self._config.write_text(CONFIG.format(path=json.dumps(str(self.output))))
        self._log = workdir / "otelcol.log"
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def __enter__(self) -> Self:
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                [str(self._binary), "--config", str(self._config)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_until(self._listening, "the collector's OTLP port", 30)
        except BaseException:
            self._proc.kill()
            self._proc.wait()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM: the receiver stops and the exporter flushes; AssertionError unless clean."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"the collector did not stop on SIGTERM:\n{self.log()}") from None
        assert code == 0, f"the collector exited {code}:\n{self.log()}"

    def log(self) -> str:
        return self._log.read_text(errors="replace")[-4000:]

    def spans(self) -> list[Span]:
        """Every span the file exporter wrote (all of them once ``stop`` returned)."""
        if not self.output.exists():
            return []
        lines = self.output.read_text().splitlines()
        return [span for line in lines if line.strip() for span in _spans(json.loads(line))]

    def _listening(self) -> bool:
        proc = self._proc
        assert proc is not None
        assert proc.poll() is None, f"the collector exited {proc.returncode}:\n{self.log()}"
        port = _listening_port(proc.pid)
        if port is not None:
            self.endpoint = f"http://127.0.0.1:{port}"
        return port is not None


def draw_trace(spans: list[Span]) -> str:
    """The spans as an indented tree (children under parents), orphans flagged."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[Span]] = {}
    for span in spans:
        children.setdefault(span.parent if span.parent in ids else "", []).append(span)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in children.get(parent, []):
            orphan = f"  MISSING PARENT {span.parent}" if depth == 0 and span.parent else ""
            lines.append(f"{'  ' * depth}{span.name}  [{span.service}] {span.span_id}{orphan}")
            walk(span.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)


def _spans(request: dict[str, Any]) -> Iterator[Span]:
    for resource in request.get("resourceSpans", []):
        service = _attributes(resource.get("resource", {})).get("service.name", "?")
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                yield Span(
                    trace_id=span["traceId"].lower(), span_id=span["spanId"].lower(),
                    parent=span.get("parentSpanId", "").lower(), name=span["name"],
                    service=service, attributes=_attributes(span),
                )  # fmt: skip


def _attributes(holder: dict[str, Any]) -> dict[str, Any]:
    # OTLP JSON: [{"key": k, "value": {"stringValue": v}}]; one kind of value each
    return {a["key"]: next(iter(a["value"].values()), None) for a in holder.get("attributes", [])}


def _listening_port(pid: int) -> int | None:
    """The port of a TCP socket ``pid`` listens on, from its fds and /proc/<pid>/net/tcp."""
    try:
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:  # gone, or an fd closed while we looked: the next poll sees
        return None
    inodes = {fd[len("socket:[") : -1] for fd in fds if fd.startswith("socket:[")}
    for row in table:
        cols = row.split()
        if cols[3] == _LISTEN and cols[9] in inodes:
            return int(cols[1].rsplit(":", 1)[1], 16)
    return None
