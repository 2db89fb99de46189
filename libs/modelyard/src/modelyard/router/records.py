"""The records the router produces besides dispatches: results, audit, shadow, dead letters.

Pure: each method returns ``Record`` s for the service to produce, so the service can count the
acks a request's ingress offset waits for before producing anything.
"""

from __future__ import annotations

import json
import time

from confluent_kafka import Message

from modelyard.audit import RequestRecord, digest_fields, encode_audit, utc
from modelyard.errors import Disposition, ModelyardError, error_class, policy_for
from modelyard.kafka.codec import Incoming
from modelyard.kafka.config import MAX_MESSAGE_BYTES
from modelyard.router.live import Hop, LiveRequest, trace_id_of
from modelyard.topics import (
    audit_topic,
    pipeline_dlq_topic,
    pipeline_results_topic,
    pipeline_shadow_topic,
)
from modelyard.wire import CONTENT_TYPE_JSON, CONTENT_TYPE_MSGPACK, Envelope, ErrorInfo
from modelyard.wire.envelope import MAX_NAME_LENGTH, encode_envelope
from modelyard.wire.headers import H, Headers, dead_letter, encode_headers
from modelyard.wire.oip_json import encode_oip_json_error, encode_oip_json_response

__all__ = ["Record", "RecordBuilder"]

Record = tuple[str, str | None, bytes, Headers]  # topic, key, value, headers


class RecordBuilder:
    def __init__(self, pipeline: str, spec_version: int, prefix: str) -> None:
        self.pipeline, self.spec_version = pipeline, spec_version
        self._results = pipeline_results_topic(prefix, pipeline)
        self._dlq = pipeline_dlq_topic(prefix, pipeline)
        self._shadow = pipeline_shadow_topic(prefix, pipeline)
        self._audit = audit_topic(prefix)

    def result(self, live: LiveRequest, trace: Headers) -> list[Record]:
        """The result on the results topic (and reply-to), and the request's audit record;
        with a dead letter of the caller's bytes when a stage refused the request as poison."""
        result = live.flow.result()
        error = live.flow.error
        record = live.record(error.code if error else "ok", error.message if error else None)
        records = [
            *self._results_of(live.incoming, result, trace),
            (self._audit, live.request_id, record, []),
        ]
        if error is not None and error.stage is not None and _dead_letters(error.code):
            error_from_stage = error_class(error.code)(error.message)
            records.append(self._dead_letter(live.incoming, error_from_stage, error.stage))
        return records

    def rejection(self, incoming: Incoming, error: ModelyardError) -> list[Record]:
        """A request that never started: dead letter (unless only late), error result, audit."""
        request_id = incoming.request_id
        records: list[Record] = []
        if policy_for(error).disposition is not Disposition.REPLY_ERROR:
            records.append(self._dead_letter(incoming, error, "router"))
        if not request_id:
            return records  # nobody to answer, nothing to audit by
        env = incoming.envelope
        result = Envelope(
            request_id, {}, self.pipeline, caller=env.caller if env else None,
            error=ErrorInfo(error.code, error.message), served_by={},
        )  # fmt: skip
        records.extend(self._results_of(incoming, result, []))
        records.append((self._audit, request_id, encode_audit(self._rejected(incoming, error)), []))
        return records

    def hop(self, hop: Hop, reply: Envelope | None, outcome: str) -> Record:
        """The audit record of one stage execution."""
        error = reply.error.message if reply is not None and reply.error is not None else None
        if reply is None and outcome != "ok":
            error = f"no reply ({outcome})"
        output = reply.fields if reply is not None and reply.error is None else None
        return (self._audit, hop.request_id, hop.record(outcome, error, output), [])

    def progress(self, live: LiveRequest, reply_value: bytes) -> Record | None:
        """A stage's reply, passed on to the caller who asked for progress."""
        reply_to = live.incoming.meta.reply_to
        if not reply_to or not live.incoming.replyable:
            return None
        headers = encode_headers([(H.EVENT, "stage"), (H.CONTENT_TYPE, CONTENT_TYPE_MSGPACK)])
        return (reply_to, live.request_id, reply_value, headers)

    def primary_copy(self, msg: Message, shadow: Hop) -> Record:
        """A primary stage reply on the shadow topic, with what the shadow auditor needs to
        write the shadow's hop record: when the copy was sent, on what input, in which trace."""
        headers = [(k, v) for k, v in (msg.headers() or []) if v is not None]
        headers += encode_headers([
            (H.SHADOW_ROLE, "primary"),
            (H.SHADOW_SENT_AT, f"{shadow.dispatched_at:.6f}"),
            (H.SHADOW_INPUT, shadow.input_digest),
            (H.SHADOW_TRACE, shadow.trace_id),
            (H.SHADOW_SPAN, shadow.scratch.get("span_id")),
            (H.SHADOW_VERSION, shadow.dispatch.served_by),
        ])  # fmt: skip
        return (self._shadow, shadow.request_id, msg.value() or b"", headers)

    def moved_to_shadow(self, msg: Message) -> Record:
        """A shadow reply that came to the inbox, passed on unchanged to the shadow topic."""
        headers = [(k, v) for k, v in (msg.headers() or []) if v is not None]
        key = msg.key()
        text_key = key.decode("utf-8", "replace") if key else None  # the caller's bytes
        return (self._shadow, text_key, msg.value() or b"", headers)

    def reply_dead_letter(self, msg: Message, error: ModelyardError) -> Record:
        """An inbox message that is no stage reply: kept with its bytes, never applied."""
        original = [(k, v) for k, v in (msg.headers() or []) if v is not None]
        source = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
        value, headers = dead_letter(
            msg.value() or b"", original, error.message, error.code, source=source,
            max_bytes=MAX_MESSAGE_BYTES,
        )  # fmt: skip
        key = msg.key()
        text_key = key.decode("utf-8", "replace") if key and len(key) <= MAX_NAME_LENGTH else None
        return (self._dlq, text_key, value, headers)

    # internals ---------------------------------------------------------------------------
    def _results_of(self, incoming: Incoming, result: Envelope, trace: Headers) -> list[Record]:
        headers = [
            *encode_headers([(H.EVENT, "result"), (H.CONTENT_TYPE, CONTENT_TYPE_MSGPACK)]),
            *trace,
        ]
        records: list[Record] = [
            (self._results, result.request_id, encode_envelope(result), headers)
        ]
        reply_to = incoming.meta.reply_to
        if reply_to and incoming.replyable:
            if incoming.is_json:  # a JSON producer gets the OIP JSON response it can read
                json_headers = [
                    *encode_headers([(H.EVENT, "result"), (H.CONTENT_TYPE, CONTENT_TYPE_JSON)]),
                    *trace,
                ]
                records.append((reply_to, result.request_id, _json_result(result), json_headers))
            else:
                records.append((reply_to, result.request_id, records[0][2], headers))
        return records

    def _dead_letter(self, incoming: Incoming, error: ModelyardError, stage: str) -> Record:
        """The caller's original bytes on the pipeline's DLQ, with why and where it failed."""
        value, headers = dead_letter(
            incoming.value, incoming.headers, error.message, error.code,
            source=f"pipeline {self.pipeline} ingress", max_bytes=MAX_MESSAGE_BYTES, stage=stage,
        )  # fmt: skip
        return (self._dlq, incoming.key, value, headers)

    def _rejected(self, incoming: Incoming, error: ModelyardError) -> RequestRecord:
        now = utc(time.time())
        env = incoming.envelope
        return RequestRecord(
            request_id=incoming.request_id or "", pipeline=self.pipeline,
            caller=env.caller if env else None, trace_id=trace_id_of(incoming.headers),
            outcome=error.code, error=error.message, spec_version=self.spec_version,
            received_at=now, finished_at=now, latency_ms=0.0,
            input_digest=digest_fields(incoming.value),
        )  # fmt: skip


def _dead_letters(code: str) -> bool:
    """Whether a stage's error ``code`` means the input is poison (it dead-lettered it too)."""
    disposition = policy_for(error_class(code)("")).disposition
    return disposition in (Disposition.DEAD_LETTER, Disposition.RETRY)


def _json_result(result: Envelope) -> bytes:
    """The OIP v2 JSON response of a pipeline (``model_name`` is the pipeline), with the
    versions that served it in ``parameters.served_by``."""
    if result.error is not None:
        return encode_oip_json_error(result.request_id, result.error.code, result.error.message)
    response = result.reply({}, result.pipeline or "", "")
    try:
        body = json.loads(encode_oip_json_response(response, result.fields))
    except ModelyardError as exc:  # a stage output JSON cannot carry: the caller learns why
        return encode_oip_json_error(result.request_id, exc.code, exc.message)
    body["parameters"] = {"served_by": dict(result.served_by or {})}
    return json.dumps(body).encode()
