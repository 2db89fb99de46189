"""The one-command demo: broker, the four reference stages, sample documents, results, a trace.

Until the router (issue 4) walks the graph, this script walks it itself, hop by hop over Kafka:
OCR → language ID → translation (only when not English) → sentiment. Every hop carries the
document's trace context, so the stages' spans and the demo's own form one trace per document.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from modelyard.broker import EmbeddedBroker, create_topics
from modelyard.client import StageClient
from modelyard.telemetry.tracing import inject_current
from modelyard.topics import model_input_topic
from modelyard.wire import Envelope
from modelyard_ocr.corpus import CORPUS
from modelyard_ocr.samples import render
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import set_span_in_context

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"ocr": "2", "langid": "1", "translate": "1", "sentiment": "2"}
DOCS = [("en", 0, False), ("es", 1, True), ("fr", 2, False), ("pt", 3, True), ("it", 4, False),
        ("ca", 5, False), ("de", 6, False)]  # fmt: skip


@dataclass
class Stage:
    """A `modelyard serve` subprocess whose console-exported spans we collect."""

    ref: str
    proc: subprocess.Popen[str]
    spans: list[dict[str, Any]] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def read(self) -> None:
        assert self.proc.stdout is not None
        buffer: list[str] = []
        for line in self.proc.stdout:
            if line.startswith("modelyard stage ready"):
                self.ready.set()
            elif line.startswith("{") or buffer:
                buffer.append(line)
                if line.rstrip() == "}":
                    self.spans.append(json.loads("".join(buffer)))
                    buffer = []
        self.ready.set()


def start_stage(ref: str, bootstrap: str) -> Stage:
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "MODELYARD_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "modelyard.cli.main", "serve", ref, "--bootstrap", bootstrap,
           "--grpc-port", "0", "--metrics-port", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    stage = Stage(ref, proc)
    threading.Thread(target=stage.read, daemon=True).start()
    return stage


def walk(
    client: StageClient, doc_id: str, image: bytes, carrier: list[tuple[str, bytes]]
) -> dict[str, Any]:
    def hop(model: str, fields: dict[str, Any]) -> Envelope:
        topic = model_input_topic("yard", model, STAGES[model])
        reply = client.call(topic, Envelope(f"{doc_id}.{model}", fields, caller="demo"), carrier)
        if reply.error is not None:
            raise RuntimeError(f"{model}: {reply.error.message}")
        return reply

    text = hop("ocr", {"image": [image]}).fields["text"][0]
    language = hop("langid", {"text": [text]}).fields["language"][0]
    status, english = b"passthrough", text
    if language != b"en":
        t = hop("translate", {"text": [text], "language": [language]}).fields
        status, english = t["status"][0], t["translation"][0] or text
    label = (
        b"-"
        if status == b"unsupported"
        else hop("sentiment", {"text": [english]}).fields["label"][0]
    )
    return {"doc": doc_id, "language": language.decode(), "translation": status.decode(),
            "sentiment": label.decode(), "text": english.decode().replace("\n", " ")}  # fmt: skip


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'document':<12} {'lang':<5} {'translation':<12} {'sentiment':<10} english text")
    for r in rows:
        text = r["text"] if len(r["text"]) < 70 else r["text"][:67] + "..."
        print(
            f"{r['doc']:<12} {r['language']:<5} {r['translation']:<12} {r['sentiment']:<10} {text}"
        )


def print_waterfall(trace_id: str, spans: list[dict[str, Any]], width: int = 50) -> None:
    mine = sorted(
        (s for s in spans if s["context"]["trace_id"] == trace_id), key=lambda s: s["start_time"]
    )
    t0 = _ts(mine[0]["start_time"])
    total = max(_ts(s["end_time"]) for s in mine) - t0
    print(f"\ntrace {trace_id} ({total * 1000:.1f} ms, {len(mine)} spans)")
    for s in mine:
        start, end = _ts(s["start_time"]) - t0, _ts(s["end_time"]) - t0
        a = int(start / total * width)
        bar = " " * a + "█" * max(1, int(end / total * width) - a)
        timing = f"{start * 1000:7.1f} +{(end - start) * 1000:6.1f} ms"
        print(f"  {s['name'][:34]:<34} {bar:<{width}} {timing}")


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> int:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("modelyard.demo")
    with EmbeddedBroker() as broker:
        print(f"broker: {broker.bootstrap}")
        create_topics(
            broker.bootstrap, [model_input_topic("yard", m, v) for m, v in STAGES.items()]
        )
        stages = [start_stage(f"{m}:{v}", broker.bootstrap) for m, v in STAGES.items()]
        try:
            for s in stages:
                if not s.ready.wait(120) or s.proc.poll() is not None:
                    raise RuntimeError(f"stage {s.ref} did not start")
                print(f"stage up: {s.ref}")
            client = StageClient(broker.bootstrap)
            rows, traces = [], []
            for lang, index, noisy in DOCS:
                doc = f"doc-{lang}{'-scan' if noisy else ''}"
                image = render(CORPUS[lang][index], noisy=noisy, seed=index)
                with tracer.start_as_current_span(f"document {doc}") as span:
                    carrier = inject_current([], set_span_in_context(span))
                    rows.append(walk(client, doc, image, carrier))
                    traces.append(f"0x{span.get_span_context().trace_id:032x}")
            client.close()
        finally:
            for s in stages:
                s.proc.send_signal(signal.SIGTERM)
            for s in stages:
                s.proc.wait(60)
    print_table(rows)
    demo_spans = [json.loads(s.to_json()) for s in exporter.get_finished_spans()]
    print_waterfall(traces[1], demo_spans + [sp for s in stages for sp in s.spans])
    return 0


if __name__ == "__main__":
    sys.exit(main())
