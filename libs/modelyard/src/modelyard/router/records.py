"""The records the router produces besides dispatches: results, audit, shadow, dead letters.

Pure: each method returns ``OutRecord`` s for the service to hand to the worker loop's outbox,
which ties them to the message they answer. Records to a destination the caller named (its
``reply-to``) are ``caller_named``: one that can never take them does not stop the router.
"""

from __future__ import annotations

import json
import time

from confluent_kafka import Message

from modelyard.audit import digest_fields, encode_audit_values, encode_payload
from modelyard.audit.observe import INPUT, Observed, observe
from modelyard.audit.records import digest_packed
from modelyard.errors import Disposition, ModelyardError, error_class, policy_for
from modelyard.graph.spec import PipelineSpec
from modelyard.kafka.codec import Incoming
from modelyard.kafka.config import MAX_MESSAGE_BYTES
from modelyard.kafka.handler import OutRecord
from modelyard.router.live import Hop, LiveRequest, trace_id_of
from modelyard.topics import (
    audit_topic,
    pipeline_dlq_topic,
    pipeline_results_topic,
    pipeline_shadow_topic,
)
from modelyard.wire import CONTENT_TYPE_JSON, CONTENT_TYPE_MSGPACK, Envelope, ErrorInfo
from modelyard.wire.envelope import MAX_NAME_LENGTH, encode_envelope, pack_fields, unpack_arrays
from modelyard.wire.headers import H, Headers, dead_letter, encode_headers
from modelyard.wire.oip_json import encode_oip_json_error, encode_oip_json_response

__all__ = ["RecordBuilder"]


class RecordBuilder:
    def __init__(self, spec: PipelineSpec, prefix: str) -> None:
        pipeline = spec.pipeline
        self.pipeline, self.spec_version, self.capture = pipeline, spec.version, spec.capture
        self._monitored = {n: dict(s.monitor) for n, s in spec.stages.items() if s.monitor}
        self._results = pipeline_results_topic(prefix, pipeline)
        self._dlq = pipeline_dlq_topic(prefix, pipeline)
        self._shadow = pipeline_shadow_topic(prefix, pipeline)
        self._audit = audit_topic(prefix)

    def result(self, live: LiveRequest, trace: Headers) -> list[OutRecord]:
        """The result on the results topic (and reply-to), and the request's audit record;
        with a dead letter of the caller's bytes when a stage refused the request as poison."""
        result = live.flow.result()
        error = live.flow.error
        capture = self.capture
        payload = encode_payload(
            pack_fields(result.fields), result.fields, keep=True,
            max_bytes=capture.max_bytes, redact=capture.result,
        )  # fmt: skip
        record = live.record(
            error.code if error else "ok", error.message if error else None, payload
        )
        records = [
            *self._results_of(live.incoming, result, trace),
            OutRecord(self._audit, record, live.request_id),
        ]
        if error is not None and error.stage is not None and _dead_letters(error.code):
            error_from_stage = error_class(error.code)(error.message)
            records.append(self._dead_letter(live.incoming, error_from_stage, error.stage))
        return records

    def rejection(
        self, incoming: Incoming, error: ModelyardError, auth: str = "none"
    ) -> list[OutRecord]:
        """A request that never started: dead letter (unless only late), error result, audit.
        ``auth``: how its caller was authenticated, when that much was settled."""
        request_id = incoming.request_id
        records: list[OutRecord] = []
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
        rejected = self._rejected(incoming, error, auth)
        records.append(OutRecord(self._audit, rejected, request_id))
        return records

    def hop(
        self,
        hop: Hop,
        reply: Envelope | None,
        outcome: str,
        output: tuple[bytes, str] | None = None,
    ) -> OutRecord:
        """The audit record of one stage execution; ``output`` is the reply's fields packed
        already, with their digest (``digest_packed``)."""
        error = reply.error.message if reply is not None and reply.error is not None else None
        if reply is None and outcome != "ok":
            error = f"no reply ({outcome})"
        ok_reply = reply is not None and reply.error is None
        if output is None and reply is not None and ok_reply:
            packed = pack_fields(reply.fields)
            output = packed, digest_packed(packed)
        captured = self._captured(hop, reply, output) if self.capture.full else (None, None)
        observed = self._observed(hop, reply) if ok_reply else None
        value = hop.record(outcome, error, output[1] if output else None, captured, observed)
        return OutRecord(self._audit, value, hop.request_id)

    def _observed(self, hop: Hop, reply: Envelope | None) -> Observed | None:
        """The monitored values of a hop's input and reply (spec ``monitor:``), from the few
        fields named: the router passes stage outputs on packed, only these are decoded."""
        monitored = self._monitored.get(hop.dispatch.stage)
        if not monitored or reply is None:
            return None
        sent, got = hop.dispatch.fields, reply.fields
        inputs = {n: sent[n] for n in (m.removeprefix(INPUT) for m in monitored) if n in sent}
        outputs = {n: got[n] for n in monitored if n in got}
        return observe(monitored, unpack_arrays(inputs), unpack_arrays(outputs))

    def _captured(
        self, hop: Hop, reply: Envelope | None, output: tuple[bytes, str] | None
    ) -> tuple[bytes | None, bytes | None]:
        """A hop's input and output payloads, per the capture policy (which keeps them)."""
        capture, stage = self.capture, hop.dispatch.stage
        sent = hop.dispatch.fields
        input_ = encode_payload(
            hop.input_packed, sent, keep=True, max_bytes=capture.max_bytes,
            redact=capture.inputs.get(stage, frozenset()),
        )  # fmt: skip
        if output is None or reply is None:
            return input_, None
        output_ = encode_payload(
            output[0], reply.fields, keep=True, max_bytes=capture.max_bytes,
            redact=capture.outputs.get(stage, frozenset()),
        )  # fmt: skip
        return input_, output_

    def progress(self, live: LiveRequest, reply_value: bytes) -> OutRecord | None:
        """A stage's reply, passed on to the caller who asked for progress."""
        reply_to = live.incoming.meta.reply_to
        if not reply_to or not live.incoming.replyable:
            return None
        headers = encode_headers([(H.EVENT, "stage"), (H.CONTENT_TYPE, CONTENT_TYPE_MSGPACK)])
        return OutRecord(reply_to, reply_value, live.request_id, headers, caller_named=True)

    def primary_copy(self, msg: Message, shadow: Hop) -> OutRecord:
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
        return OutRecord(self._shadow, msg.value() or b"", shadow.request_id, headers)

    def moved_to_shadow(self, msg: Message) -> OutRecord:
        """A shadow reply that came to the inbox, passed on unchanged to the shadow topic."""
        headers = [(k, v) for k, v in (msg.headers() or []) if v is not None]
        key = msg.key()
        text_key = key.decode("utf-8", "replace") if key else None  # the caller's bytes
        return OutRecord(self._shadow, msg.value() or b"", text_key, headers)

    def reply_dead_letter(self, msg: Message, error: ModelyardError) -> OutRecord:
        """An inbox message that is no stage reply: kept with its bytes, never applied."""
        original = [(k, v) for k, v in (msg.headers() or []) if v is not None]
        source = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
        value, headers = dead_letter(
            msg.value() or b"", original, error.message, error.code, source=source,
            max_bytes=MAX_MESSAGE_BYTES,
        )  # fmt: skip
        key = msg.key()
        text_key = key.decode("utf-8", "replace") if key and len(key) <= MAX_NAME_LENGTH else None
        return OutRecord(self._dlq, value, text_key, headers)

    # internals ---------------------------------------------------------------------------
    def _results_of(self, incoming: Incoming, result: Envelope, trace: Headers) -> list[OutRecord]:
        headers = [*_RESULT_HEADERS, *trace]
        value = encode_envelope(result)
        records = [OutRecord(self._results, value, result.request_id, headers)]
        reply_to = incoming.meta.reply_to
        if reply_to and incoming.replyable:
            if incoming.is_json:  # a JSON producer gets the OIP JSON response it can read
                value = _json_result(result)
                headers = [*_JSON_RESULT_HEADERS, *trace]
            records.append(
                OutRecord(reply_to, value, result.request_id, headers, caller_named=True)
            )
        return records

    def _dead_letter(self, incoming: Incoming, error: ModelyardError, stage: str) -> OutRecord:
        """The caller's original bytes on the pipeline's DLQ, with why and where it failed."""
        value, headers = dead_letter(
            incoming.value, incoming.headers, error.message, error.code,
            source=f"pipeline {self.pipeline} ingress", max_bytes=MAX_MESSAGE_BYTES, stage=stage,
        )  # fmt: skip
        return OutRecord(self._dlq, value, incoming.key, headers)

    def _rejected(self, incoming: Incoming, error: ModelyardError, auth: str) -> bytes:
        now = time.time()
        env = incoming.envelope
        caller = env.caller if env else None  # ``auth`` says whether it was proven
        return encode_audit_values("request", {
            "request_id": incoming.request_id or "", "pipeline": self.pipeline,
            "caller": caller, "principal": caller, "auth": auth,
            "trace_id": trace_id_of(incoming.headers),
            "outcome": error.code, "error": error.message, "spec_version": self.spec_version,
            "received_at": now, "finished_at": now, "latency_ms": 0.0, "served_by": {},
            "skipped": [], "input_digest": digest_fields(incoming.value),
        })  # fmt: skip


# encoded once: every result carries one of these
_RESULT_HEADERS = tuple(
    encode_headers([(H.EVENT, "result"), (H.CONTENT_TYPE, CONTENT_TYPE_MSGPACK)])
)
_JSON_RESULT_HEADERS = tuple(
    encode_headers([(H.EVENT, "result"), (H.CONTENT_TYPE, CONTENT_TYPE_JSON)])
)


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
        fields = unpack_arrays(result.fields)  # stage outputs are passed on packed
        body = json.loads(encode_oip_json_response(response, fields))
    except ModelyardError as exc:  # a stage output JSON cannot carry: the caller learns why
        return encode_oip_json_error(result.request_id, exc.code, exc.message)
    body["parameters"] = {"served_by": dict(result.served_by or {})}
    return json.dumps(body).encode()
