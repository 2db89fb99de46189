"""``PipelineGateway``: submit requests to any pipeline over Kafka and await their results.

It speaks only the client contract of docs/router-api.md, so it works against any router
instance: a request goes to ``yard.p.<pipeline>.in`` keyed by its id and naming this gateway's
private reply topic in ``reply-to``; the router answers there (``event: result``, and with
``progress: 1`` one ``event: stage`` per stage reply first). Used from asyncio; the gRPC API
and ``modelyard send`` are adapters over it.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any, Self

from modelyard.audit import digest_packed
from modelyard.audit.chain import AuditChain
from modelyard.auth import AuthMethod, CallerKey, sign_request
from modelyard.errors import DeadlineExceededError, UnavailableError, ValidationError
from modelyard.gateway.carrier import request_carrier
from modelyard.gateway.kafka import KafkaLink
from modelyard.gateway.pending import RESULT, Event, EventQueue, Pending
from modelyard.gateway.refusal import Refusal, refusal_record
from modelyard.telemetry.hooks import Carrier
from modelyard.topics import audit_topic, pipeline_ingress_topic
from modelyard.wire import CONTENT_TYPE_MSGPACK, Envelope
from modelyard.wire.envelope import MAX_NAME_LENGTH, encode_envelope_fields, pack_fields
from modelyard.wire.headers import H

__all__ = ["DEFAULT_TIMEOUT_S", "PipelineGateway"]

DEFAULT_TIMEOUT_S = 30.0
# Waiting this much past the deadline lets the router's own `deadline` result (which says
# which stages ran) arrive before the gateway gives up on its own.
REPLY_GRACE_S = 1.0
# a topic-name segment (no dots, no spaces) no longer than an envelope carries
_PIPELINE = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_NAME_LENGTH}}}")
_MAX_ID = 200


class PipelineGateway:
    """One producer, one private reply topic, and the requests waiting on it.

    ``reply_topic`` defaults to a fresh ``<prefix>.gw.<random>``, deleted on close; a topic
    given instead must be this gateway's alone (it is read from its start, and kept).
    ``signing_key`` signs every request (docs/wire-format.md, "Signing a request"): a caller's
    own key names its principal as the caller; a ``may_act_for`` key (the router's gRPC
    gateway) names the caller it authenticated, and how.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        topic_prefix: str = "yard",
        kafka: Mapping[str, Any] | None = None,
        reply_topic: str | None = None,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        reply_grace_s: float = REPLY_GRACE_S,
        connect_timeout_s: float = 10.0,
        signing_key: CallerKey | None = None,
        audit_chain: AuditChain | None = None,
    ) -> None:
        """``audit_chain``: the hash chain its audit records (refused calls) are sealed into."""
        self.topic_prefix = topic_prefix
        self.signing_key = signing_key
        self.default_timeout_s = default_timeout_s
        self.reply_grace_s = reply_grace_s
        self.reply_topic = reply_topic or f"{topic_prefix}.gw.{uuid.uuid4().hex[:16]}"
        self._link = KafkaLink(
            bootstrap,
            self.reply_topic,
            kafka,
            connect_timeout_s=connect_timeout_s,
            delete_on_close=reply_topic is None,  # only a topic it named itself
            audit=None if audit_chain is None else (audit_chain, audit_topic(topic_prefix)),
        )
        self._pending = Pending()
        self._open = False

    async def start(self) -> Self:
        """Create the reply topic and start reading it; returns self."""
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._link.open, loop, self._pending.deliver, self._pending.fail)
        self._open = True
        return self

    async def close(self) -> None:
        """Fail what still waits, stop the reader, flush, delete the reply topic."""
        if self._open:
            self._open = False
            self._pending.fail_all(UnavailableError("the gateway is closing"))
            await asyncio.to_thread(self._link.close)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def submit(
        self,
        pipeline: str,
        fields: Mapping[str, Any],
        *,
        request_id: str | None = None,
        caller: str | None = None,
        auth: AuthMethod | None = None,
        deadline_ms: int | None = None,
        carrier: Carrier | None = None,
    ) -> Envelope:
        """Run one request through ``pipeline`` and return its final result envelope.

        ``caller`` and ``auth``: who asked and how that was proven (signed with a
        ``may_act_for`` key). A failed request is a result too (``error`` set, ``served_by``
        what ran); only the gateway's own failures raise: DeadlineExceededError when no result
        came in time, UnavailableError or OverloadedError when the request could not be sent,
        PermissionDeniedError when the signing key may not name ``caller``.
        """
        request = self._request(pipeline, fields, request_id, caller, deadline_ms)
        future = self._pending.expect_result(request.request_id)
        try:
            self._send(request, carrier, auth, progress=False)
            timeout = self._wait_s(request)
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise _timed_out(request, timeout) from None
        finally:
            self._pending.forget(request.request_id)

    async def stream(
        self,
        pipeline: str,
        fields: Mapping[str, Any],
        *,
        request_id: str | None = None,
        caller: str | None = None,
        auth: AuthMethod | None = None,
        deadline_ms: int | None = None,
        carrier: Carrier | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Run one request with progress: yields ("stage", reply) per stage, then ("result", …).

        Raises like :meth:`submit`. Closing the iterator early stops the wait, not the request.
        """
        request = self._request(pipeline, fields, request_id, caller, deadline_ms)
        queue = self._pending.expect_events(request.request_id)
        try:
            self._send(request, carrier, auth, progress=True)
            give_up = time.monotonic() + self._wait_s(request)
            while True:
                kind, envelope = await _next(queue, request, give_up)
                yield kind, envelope
                if kind == RESULT:
                    return
        finally:
            self._pending.forget(request.request_id)

    def _request(
        self,
        pipeline: str,
        fields: Mapping[str, Any],
        request_id: str | None,
        caller: str | None,
        deadline_ms: int | None,
    ) -> Envelope:
        if not self._open:
            raise UnavailableError("the gateway is not started (use `async with` or start())")
        if not _PIPELINE.fullmatch(pipeline):
            raise ValidationError(f"invalid pipeline name {pipeline!r}")
        rid = request_id or uuid.uuid4().hex
        if len(rid) > _MAX_ID or not rid.isprintable():
            raise ValidationError(f"request id must be printable and at most {_MAX_ID} characters")
        if deadline_ms is None:
            deadline_ms = int((time.time() + self.default_timeout_s) * 1000)
        if caller is None and self.signing_key is not None:
            caller = self.signing_key.principal  # a caller's own key names its principal
        return Envelope(
            rid, dict(fields), pipeline=pipeline, caller=caller, deadline_ms=deadline_ms
        )

    def _wait_s(self, request: Envelope) -> float:
        """How long to wait for the result: until the deadline, plus the grace."""
        assert request.deadline_ms is not None
        return max(0.0, request.deadline_ms / 1000 - time.time()) + self.reply_grace_s

    def record_refusal(self, refusal: Refusal) -> None:
        """Audit a call refused before it became a request (see ``gateway/refusal.py``)."""
        topic = audit_topic(self.topic_prefix)
        self._link.publish(topic, refusal.request_id, refusal_record(refusal))

    def _send(
        self,
        request: Envelope,
        carrier: Carrier | None,
        auth: AuthMethod | None,
        *,
        progress: bool,
    ) -> None:
        headers, _ = request_carrier(carrier=carrier)
        headers += [
            (H.CONTENT_TYPE, CONTENT_TYPE_MSGPACK.encode()),
            (H.REPLY_TO, self.reply_topic.encode()),
        ]
        if progress:
            headers.append((H.PROGRESS, b"1"))
        assert request.pipeline is not None
        packed = pack_fields(
            request.fields
        )  # once: the envelope carries it, the signature hashes it
        if self.signing_key is not None:
            headers += self._signature(request, digest_packed(packed), auth)
        topic = pipeline_ingress_topic(self.topic_prefix, request.pipeline)
        self._link.send(topic, request.request_id, encode_envelope_fields(request, packed), headers)

    def _signature(
        self, request: Envelope, fields_digest: str, auth: AuthMethod | None
    ) -> list[tuple[str, bytes]]:
        key = self.signing_key
        assert key is not None
        assert request.pipeline is not None
        on_behalf = None
        if key.may_act_for and request.caller != key.principal:
            on_behalf = auth or "none"  # a caller named without proof is recorded as such
        return sign_request(
            key, request.request_id, request.pipeline, request.deadline_ms, fields_digest,
            caller=request.caller, on_behalf=on_behalf,
        )  # fmt: skip


async def _next(queue: EventQueue, request: Envelope, give_up: float) -> Event:
    timeout = max(0.0, give_up - time.monotonic())
    try:
        item = await asyncio.wait_for(queue.get(), timeout)
    except TimeoutError:
        raise _timed_out(request, timeout) from None
    if isinstance(item, BaseException):
        raise item
    return item


def _timed_out(request: Envelope, waited_s: float) -> DeadlineExceededError:
    return DeadlineExceededError(
        f"no result for request {request.request_id} of pipeline {request.pipeline!r} "
        f"within {waited_s:.1f}s"
    )
