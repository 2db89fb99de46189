"""The one-command demo (`make demo`): the whole stack, sample documents, results, a trace.

It starts what `modelyard up` starts (embedded broker, one worker per model version in use, the
router), mirrors language ID to a shadow version, pushes seven rendered documents (two of them
scan-like) through OCR → language ID → translate (only when not English) → sentiment over the
router's Kafka contract, prints a results table, what the shadow saw, one request's waterfall
from its audit records (what `modelyard trace` prints), then what the audit sink stored
(`modelyard audit query`) and that every hash chain holds (`modelyard audit verify`), then stops
the stack.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from modelyard.audit import HopRecord
from modelyard.audit.reader import read_request_records
from modelyard.audit.waterfall import render_waterfall
from modelyard.cli.control_view import status_text
from modelyard.control import ControlRecord, ShadowChange
from modelyard.control.topic import read_records, write_change
from modelyard.control.verify import ControlVerifier
from modelyard.gateway.blocking import BlockingGateway, Submission
from modelyard.keys import SigningKey
from modelyard.stack import Stack
from modelyard.telemetry import configure_logging
from modelyard.topics import audit_topic
from modelyard.wire import Envelope
from modelyard_ocr.corpus import CORPUS
from modelyard_ocr.samples import render

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = {"ocr": "2", "langid": "2", "translate": "1", "sentiment": "2"}
SHADOW = ("langid", "1")  # the older language ID sees every document too, never served
DOCS = [("en", 0, False), ("es", 1, True), ("fr", 2, False), ("pt", 3, True), ("it", 4, False),
        ("ca", 5, False), ("de", 6, False)]  # fmt: skip
TRACED = "doc-es-scan"
STAGES = ("ocr", "langid", "translate", "sentiment")


def documents() -> list[Submission]:
    subs = []
    for lang, index, noisy in DOCS:
        doc = f"doc-{lang}{'-scan' if noisy else ''}"
        image = render(CORPUS[lang][index], noisy=noisy, seed=index)
        subs.append(Submission({"image": [image]}, request_id=doc, caller="demo"))
    return subs


def text(result: Envelope, name: str) -> str:
    value = result.fields.get(name)
    if value is None:
        return "-"
    item = value.reshape(-1)[0] if hasattr(value, "reshape") else value
    return (item.decode() if isinstance(item, bytes) else str(item)).replace("\n", " ")


def print_results(docs: list[Submission], results: list[Any]) -> None:
    head = f"{'document':<12} {'lang':<5} {'translation':<12} {'sentiment':<10} {'served by':<38}"
    print(f"\n{head} text")
    for sub, result in zip(docs, results, strict=True):
        if not isinstance(result, Envelope):
            print(f"{sub.request_id:<12} error: {result}")
            continue
        if result.error is not None:
            print(f"{sub.request_id:<12} error: {result.error.code}: {result.error.message}")
            continue
        translated = text(result, "translation") if "translation" in result.fields else ""
        english = translated or text(result, "text")  # untranslated: the OCR text as read
        english = english if len(english) < 60 else english[:57] + "..."
        served = " ".join(f"{v}" for v in result.served_by.values()) if result.served_by else "-"
        status = (
            text(result, "translation_status")
            if "translation_status" in result.fields
            else "skipped"
        )
        print(f"{sub.request_id:<12} {text(result, 'language'):<5} {status:<12} "
              f"{text(result, 'sentiment'):<10} {served:<38} {english}")  # fmt: skip


def shadow_hop(bootstrap: str, request_id: str) -> HopRecord | None:
    """The shadow auditor's record of a request's shadow run (it runs at a lower priority,
    so give it a moment to catch up)."""
    for _ in range(100):
        scan = read_request_records(bootstrap, audit_topic("yard"), request_id, timeout_s=30)
        hops = [r for r in scan.records if isinstance(r, HopRecord) and r.shadow]
        if hops:
            return hops[0]
        time.sleep(0.1)
    return None


def print_shadow(bootstrap: str, docs: list[Submission]) -> None:
    """What the shadow auditor found: how often the shadow agreed with the primary."""
    hops = {d.request_id: shadow_hop(bootstrap, str(d.request_id)) for d in docs}
    seen = [h for h in hops.values() if h is not None]
    agree = sum(bool(h.agrees) for h in seen)
    pair = f"langid:{SHADOW[1]} beside langid:{VERSIONS['langid']}"
    print(f"\nshadow {pair}: {len(seen)} of {len(hops)} documents mirrored and audited, "
          f"{agree} agree; none reached a result")  # fmt: skip
    for doc, hop in hops.items():
        if hop is not None and not hop.agrees:
            print(f"  {doc}: the shadow disagreed ({hop.outcome})")


def read_records_of(bootstrap: str, verifier: ControlVerifier) -> list[ControlRecord]:
    return [p.record for p in read_records(bootstrap, verifier=verifier) if p.record.key == "docs"]


def print_trace(bootstrap: str, request_id: str) -> None:
    scan = read_request_records(bootstrap, audit_topic("yard"), request_id, timeout_s=30)
    print(f"\n$ modelyard trace {request_id}")
    for line in render_waterfall(scan.records):
        print(line)


def modelyard(*args: str) -> subprocess.CompletedProcess[str]:
    """One `modelyard` command, as a user would type it; its output as it printed it."""
    argv = [sys.executable, "-m", "modelyard.cli.main", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


def print_audit(stack: Stack, requests: int) -> None:
    """What the audit sink stored, once it has every request and its chains are signed (routers
    sign a checkpoint within seconds of their last record)."""
    store, keyring = stack.audit_store or "", str(stack.keys.keyring if stack.keys else "")
    query = ("audit", "query", "--store", store, "--pipeline", "docs", "--kind", "request")
    verify = ("audit", "verify", "--store", store, "--keyring", keyring)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stored = modelyard(*query, "--format", "jsonl").stdout.splitlines()
        checked = modelyard(*verify)
        if len(stored) >= requests and checked.returncode == 0:
            break
        time.sleep(0.5)
    print("\n$ modelyard audit query --pipeline docs --kind request")
    print(modelyard(*query).stdout.rstrip())
    print("\n$ modelyard audit verify")
    print((checked.stdout + checked.stderr).rstrip())


def main() -> int:
    configure_logging(json=False, level="WARNING")  # the demo's own output is the point
    stack = Stack(
        pipelines=(ROOT / "pipelines" / "docs.yaml",),
        repository=ROOT / "models",
        versions=VERSIONS,
        broker_port=0,
        router_port=0,
        log_level="WARNING",
    )
    with stack:
        print(f"stack up: broker {stack.bootstrap}, router gRPC {stack.router_grpc}")
        change = ShadowChange(stage=SHADOW[0], version=SHADOW[1], sample_rate=1.0)
        assert stack.keys is not None  # the stack's keyring and admin key, made at start
        admin = SigningKey.load(stack.keys.admin_key)
        verifier = ControlVerifier.from_file(stack.keys.keyring)
        write_change(stack.bootstrap, "docs", change, signer=admin, verifier=verifier,
                     reason="compare langid")  # fmt: skip
        stack.wait_worker(f"{SHADOW[0]}:{SHADOW[1]}", timeout_s=120)
        docs = documents()
        with BlockingGateway(stack.bootstrap, default_timeout_s=120) as gateway:
            gateway.submit("docs", docs[0].fields, request_id="warm-up")
            # one at a time, so the waterfall shows a document's own latency, not a queue
            results = [gateway.submit("docs", d.fields, request_id=d.request_id, caller=d.caller)
                       for d in docs]  # fmt: skip
        print("\n$ modelyard status docs")
        records = read_records_of(stack.bootstrap, verifier)
        print(status_text(stack.state.pipeline("docs"), records, STAGES))
        print_results(docs, results)
        print_shadow(stack.bootstrap, docs)  # also waits until the auditor has the traced one
        print_trace(stack.bootstrap, TRACED)
        print_audit(stack, len(docs) + 1)  # the documents and the warm-up
    return 0


if __name__ == "__main__":
    sys.exit(main())
