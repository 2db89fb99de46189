"""The one-command demo (`make demo`): the whole stack, sample documents, results, a trace.

It starts what `modelyard up` starts (embedded broker, one worker per model version in use, the
router, the audit sink, the monitor), mirrors language ID and OCR to shadow versions (ocr:3 reads
columns in order and turned pages the right way up; ocr:2 serves), pushes nine rendered documents
(two of them scan-like, one in three columns, one upside down) through OCR → language ID →
translate (only when not English) → sentiment over the router's Kafka contract, prints a results
table, what the shadows saw, promotes ocr:3 and sends the two hard pages again, prints one
request's waterfall from its audit records (what `modelyard trace` prints), then what the audit
sink stored (`modelyard audit query`) and that every hash chain holds (`modelyard audit verify`),
then what the monitor made of it per stage and version (`modelyard monitor show docs`, on 10 s
windows so the demo's traffic is summarised before it ends), then stops the stack.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from modelyard.audit import HopRecord
from modelyard.audit.reader import read_request_records
from modelyard.audit.waterfall import render_waterfall
from modelyard.cli.control_view import status_text
from modelyard.control import ControlRecord, Rollout, ShadowChange
from modelyard.control.topic import read_records, write_change
from modelyard.control.verify import ControlVerifier
from modelyard.gateway.blocking import BlockingGateway, Submission
from modelyard.keys import SigningKey
from modelyard.monitor.settings import monitor_topic
from modelyard.monitor.show import read_summaries
from modelyard.monitor.summary import combine
from modelyard.stack import Stack
from modelyard.telemetry import configure_logging
from modelyard.topics import audit_topic, pipeline_shadow_topic
from modelyard.wire import Envelope, decode_envelope
from modelyard.wire.headers import H, header_value
from modelyard_ocr.corpus import CORPUS
from modelyard_ocr.metrics import cer, normalise
from modelyard_ocr.pages import column_page, rotated_page
from modelyard_ocr.samples import render

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = {"ocr": "2", "langid": "2", "translate": "1", "sentiment": "2"}
SHADOW = ("langid", "1")  # the older language ID sees every document too, never served
NEW_OCR = "3"  # shadowed beside ocr:2, compared, then promoted
DOCS = [("en", 0, False), ("es", 1, True), ("fr", 2, False), ("pt", 3, True), ("it", 4, False),
        ("ca", 5, False), ("de", 6, False)]  # fmt: skip
TRACED = "doc-es-scan"
STAGES = ("ocr", "langid", "translate", "sentiment")
# the monitor's windows: short, so those of the demo's traffic close (window end + 5 s of grace)
# while it runs; `modelyard up` keeps the default minute
MONITOR_WINDOW_S = 10.0
MONITOR_WAIT_S = 60.0


HARD_PAGES = {"doc-columns": column_page("en", 3), "doc-upside-down": rotated_page("es", 2)}


def documents() -> tuple[list[Submission], dict[str, str]]:
    """The documents to send, and each one's true text."""
    subs, truth = [], {}
    for lang, index, noisy in DOCS:
        doc = f"doc-{lang}{'-scan' if noisy else ''}"
        image = render(CORPUS[lang][index], noisy=noisy, seed=index)
        subs.append(Submission({"image": [image]}, request_id=doc, caller="demo"))
        truth[doc] = CORPUS[lang][index]
    for doc, page in HARD_PAGES.items():
        subs.append(Submission({"image": [page.png]}, request_id=doc, caller="demo"))
        truth[doc] = page.truth
    return subs, truth


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


def shadow_replies(bootstrap: str, stage: str, ids: set[str]) -> dict[str, Envelope]:
    """The shadow version's replies for ``stage`` (what it would have answered), by request
    id, read from the pipeline's shadow topic where they go instead of downstream."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-shadow",
                         "enable.auto.commit": False})  # fmt: skip
    topic = pipeline_shadow_topic("yard", "docs")
    consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
    found: dict[str, Envelope] = {}
    deadline = time.monotonic() + 120
    try:
        while not ids <= set(found) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            headers = msg.headers() or []
            if header_value(headers, H.SHADOW) == "1" and header_value(headers, H.STAGE) == stage:
                reply = decode_envelope(msg.value() or b"")
                found[reply.request_id] = reply
    finally:
        consumer.close()
    return found


def print_ocr_shadow(bootstrap: str, results: dict[str, Envelope], truth: dict[str, str]) -> None:
    """ocr:3 beside the active OCR: how often they agree, and what it reads that the other
    does not (character error rate against the text the page was rendered from)."""
    wanted = set(results)
    shadow = {d: r for d, r in shadow_replies(bootstrap, "ocr", wanted).items() if d in wanted}
    agree = sum(
        normalise(text(r, "text")) == normalise(text(shadow[d], "text"))
        for d, r in results.items() if d in shadow
    )  # fmt: skip
    print(f"\nshadow ocr:{NEW_OCR} beside ocr:{VERSIONS['ocr']}: {len(shadow)} of {len(results)} "
          f"pages mirrored, {agree} read alike (whitespace aside); where they differ:")  # fmt: skip
    print(f"  {'document':<16} {'ocr:2 CER':>9} {'ocr:3 CER':>9}  ocr:3 turned the page by")
    for doc, result in results.items():
        new = shadow.get(doc)
        if new is None or normalise(text(result, "text")) == normalise(text(new, "text")):
            continue
        old_cer = cer([(text(result, "text"), truth[doc])])
        new_cer = cer([(text(new, "text"), truth[doc])])
        angle = float(new.fields["angle"].reshape(-1)[0]) if "angle" in new.fields else 0.0
        print(f"  {doc:<16} {old_cer:>9.1%} {new_cer:>9.1%}  {angle:.0f}°")


def promote(stack: Stack, admin: SigningKey, verifier: ControlVerifier) -> None:
    """Roll ocr:3 out and wait until the router routes by it."""
    change = Rollout(stage="ocr", version=NEW_OCR)
    print(f'\n$ modelyard rollout docs ocr {NEW_OCR} --reason "reads columns and turned pages"')
    record = write_change(stack.bootstrap, "docs", change, signer=admin, verifier=verifier,
                          reason="reads columns and turned pages")  # fmt: skip
    stack.wait_worker(f"ocr:{NEW_OCR}", timeout_s=120)
    metrics = f"http://{stack.routers['docs']['metrics']}/metrics"
    deadline = time.monotonic() + 60
    while router_seq(metrics) < record.seq and time.monotonic() < deadline:
        time.sleep(0.05)


def router_seq(url: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  # the router's own
        body = response.read().decode()
    found = re.search(r'^modelyard_router_control_seq\{pipeline="docs"\} (\S+)$', body, re.M)
    return float(found[1]) if found else -1.0


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
        signed = "unsigned tail" not in checked.stdout  # every record under a checkpoint
        if len(stored) >= requests and checked.returncode == 0 and signed:
            break
        time.sleep(0.5)
    print("\n$ modelyard audit query --pipeline docs --kind request")
    print(modelyard(*query).stdout.rstrip())
    print("\n$ modelyard audit verify")
    print((checked.stdout + checked.stderr).rstrip())


def windowed(bootstrap: str, stage: str) -> int:
    """Requests of ``stage`` (served, not shadow copies) in the monitor's published windows."""
    return sum(
        w.stats.requests
        for w in combine(read_summaries(bootstrap, monitor_topic("yard")))
        if w.key.pipeline == "docs" and w.key.stage == stage and w.key.role == "active"
    )


def print_monitor(stack: Stack, requests: int) -> None:
    """What the monitor made of the traffic, once the windows holding every request have closed
    (every request has one OCR hop), or after MONITOR_WAIT_S with what it has by then."""
    deadline = time.monotonic() + MONITOR_WAIT_S
    if (seen := windowed(stack.bootstrap, "ocr")) < requests:
        print(f"\n(waiting up to {MONITOR_WAIT_S:.0f} s for the monitor's {MONITOR_WINDOW_S:.0f} s "
              f"windows holding all {requests} requests to close)", flush=True)  # fmt: skip
    while seen < requests and time.monotonic() < deadline:
        time.sleep(0.5)
        seen = windowed(stack.bootstrap, "ocr")
    if seen < requests:
        print(f"after {MONITOR_WAIT_S:.0f} s the monitor has published windows for {seen} of "
              f"{requests} requests; what it has:")  # fmt: skip
    print("\n$ modelyard monitor show docs")
    shown = modelyard("monitor", "show", "docs", "--bootstrap", stack.bootstrap)
    print((shown.stdout + shown.stderr).rstrip())


def main() -> int:
    configure_logging(json=False, level="WARNING")  # the demo's own output is the point
    stack = Stack(
        pipelines=(ROOT / "pipelines" / "docs.yaml",),
        repository=ROOT / "models",
        versions=VERSIONS,
        broker_port=0,
        router_port=0,
        log_level="WARNING",
        monitor_window_s=MONITOR_WINDOW_S,
    )
    with stack:
        print(f"stack up: broker {stack.bootstrap}, router gRPC {stack.router_grpc}")
        assert stack.keys is not None  # the stack's keyring and admin key, made at start
        admin = SigningKey.load(stack.keys.admin_key)
        verifier = ControlVerifier.from_file(stack.keys.keyring)
        for stage, version, why in ((*SHADOW, "compare langid"), ("ocr", NEW_OCR, "try ocr:3")):
            change = ShadowChange(stage=stage, version=version, sample_rate=1.0)
            write_change(stack.bootstrap, "docs", change, signer=admin, verifier=verifier,
                         reason=why)  # fmt: skip
            stack.wait_worker(f"{stage}:{version}", timeout_s=120)
        docs, truth = documents()
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
            served = {str(d.request_id): r for d, r in zip(docs, results, strict=True)
                      if isinstance(r, Envelope)}  # fmt: skip
            print_ocr_shadow(stack.bootstrap, served, truth)
            promote(stack, admin, verifier)
            hard = [d for d in docs if d.request_id in HARD_PAGES]
            again = [gateway.submit("docs", d.fields, request_id=f"{d.request_id}-again",
                                    caller=d.caller) for d in hard]  # fmt: skip
        print_results(hard, again)
        print_trace(stack.bootstrap, TRACED)
        requests = len(docs) + len(hard) + 1  # the documents, again, the warm-up
        print_audit(stack, requests)
        print_monitor(stack, requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
