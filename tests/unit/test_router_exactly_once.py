"""An exactly-once router's memory of answered requests: a request answered in a transaction
that never committed (its partition revoked, or the transaction aborted and rewound) is routed
again when it is read again; one whose answer committed is dropped as a redelivery."""

from __future__ import annotations

import numpy as np
from modelyard.graph import parse_spec
from modelyard.router.service import PipelineRouter, RouterOptions
from modelyard.wire import Envelope, decode_envelope, encode_envelope
from modelyard.wire.envelope import encode_reply_envelope

from tests.unit.test_router_lean import CHAIN, _Clients, _Message, _Routing


def _router(clients: _Clients) -> PipelineRouter:
    options = RouterOptions("none:9092", exactly_once=True)
    router = PipelineRouter(parse_spec(CHAIN, "chain.yaml"), _Routing(), options, clients=clients)
    _assign(router)
    return router


def _assign(router: PipelineRouter) -> None:
    tps = [(router._ingress, 0), (router._inbox, 0)]
    router.outbox.assign(tps)
    router.assigned(tps)


def _revoke(router: PipelineRouter) -> None:
    tps = [(router._ingress, 0), (router._inbox, 0)]
    router.revoked(tps)
    router.outbox.revoke(tps)


def _dispatches(clients: _Clients) -> int:
    return sum(1 for r in clients.made.records if r.topic.startswith("yard.m.noop."))


def _route_to_the_end(router: PipelineRouter, clients: _Clients, offset: int) -> None:
    """Request r1 at ``offset`` of the ingress, each stage replying with its input."""
    request = Envelope("r1", {"x": np.arange(3, dtype=np.float32)})
    messages = [_Message(router._ingress, encode_envelope(request), [], offset)]
    for at in range(1, 3):
        router.handle(router.outbox.admit(messages))
        _topic, _key, value, headers = clients.made.records[-1]
        sent = decode_envelope(value)
        reply = encode_reply_envelope(sent, {**sent.fields}, "noop", "1")
        meta = [(k, v) for k, v in headers if k in ("stage", "attempt")]
        messages = [_Message(router._inbox, reply, meta, offset * 10 + at)]
    router.handle(router.outbox.admit(messages))


def _read_again(router: PipelineRouter, offset: int) -> None:
    request = Envelope("r1", {"x": np.arange(3, dtype=np.float32)})
    router.handle(router.outbox.admit([_Message(router._ingress, encode_envelope(request), [],
                                                offset)]))  # fmt: skip


def test_a_request_whose_answer_did_not_commit_is_routed_again_when_read_again() -> None:
    clients = _Clients()
    router = _router(clients)
    _route_to_the_end(router, clients, 0)
    assert _dispatches(clients) == 2
    _revoke(router)  # its answer was held for the transaction, and is dropped with it
    _assign(router)
    _read_again(router, 0)
    assert _dispatches(clients) == 3  # routed again: the first stage has it


def test_a_request_whose_answer_committed_is_dropped_when_read_again() -> None:
    clients = _Clients()
    router = _router(clients)
    _route_to_the_end(router, clients, 0)
    router.committed([(router._ingress, 0, 1)])
    _revoke(router)
    _assign(router)
    _read_again(router, 0)  # e.g. a caller that sent it twice
    assert _dispatches(clients) == 2
