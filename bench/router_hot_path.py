"""Python cost per request of the router, without a broker: a 2-stage no-op pipeline.

``PipelineRouter`` handles consumed batches as the worker loop hands them over (tickets of the
ingress, then of the stage replies), with the hooks ``modelyard router`` installs (tracing off,
as in ``make bench``), stand-ins for the consumer's messages, and a producer that acknowledges
every record at once. What librdkafka itself costs (produce, its threads, delivery reports) and
the loop's own polling are not in this figure.

For finding where the router's time goes between runs of ``make bench``; a report, not a target:

    python -m bench.router_hot_path [--requests N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time
from typing import Any

from modelyard.control import ControlState, StageRouting
from modelyard.control.routing import PipelineRouting
from modelyard.graph import parse_spec
from modelyard.router.guards import GuardHook
from modelyard.router.service import PipelineRouter, RouterOptions
from modelyard.telemetry import HookChain, RouteLoggingHooks, RouteMetricsHooks, RouteTracingHooks
from modelyard.telemetry.logging import configure_logging
from modelyard.wire import Envelope, decode_envelope, encode_envelope
from modelyard.wire.envelope import encode_reply_envelope
from prometheus_client import CollectorRegistry

from bench.kafka_bench import PAYLOAD

SPEC = parse_spec(
    """
pipeline: hot
version: 1
inputs: {x: {datatype: FP32, shape: [-1]}}
stages:
  s0: {model: noop, inputs: {x: request.x}}
  s1: {model: noop, inputs: {x: s0.x}}
outputs: {x: s1.x}
""",
    "hot.yaml",
)
BATCH = 500


class _Message:
    """The parts of ``confluent_kafka.Message`` the router reads."""

    __slots__ = ("_headers", "_key", "_offset", "_topic", "_value")

    def __init__(self, topic: str, key: bytes, value: bytes, headers: list[Any], offset: int):
        self._topic, self._key, self._value, self._headers = topic, key, value, headers
        self._offset = offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[Any]:
        return self._headers

    def error(self) -> None:
        return None


class _Producer:
    """Acknowledges every record at once; keeps the dispatches for the stand-in stage."""

    def __init__(self) -> None:
        self.dispatches: list[tuple[bytes, list[tuple[str, bytes]]]] = []

    def produce(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> None:
        if topic.startswith("yard.m."):
            self.dispatches.append((value, kw["headers"]))
        callback = kw.get("on_delivery")
        if callback is not None:
            callback(None, None)

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class _Clients:
    def __init__(self) -> None:
        self.made = _Producer()

    def consumer(self, _config: dict[str, Any]) -> Any:
        return None

    def producer(self, _config: dict[str, Any]) -> Any:
        return self.made


class _Routing:
    state = ControlState(
        {"hot": PipelineRouting(pipeline="hot", stages={
            "s0": StageRouting(active="1"), "s1": StageRouting(active="1")})}
    )  # fmt: skip


def _router() -> tuple[PipelineRouter, _Producer]:
    registry = CollectorRegistry()
    guard = GuardHook("hot", lambda: _Routing.state, lambda _trip: None, registry)
    metrics = RouteMetricsHooks(registry)
    hooks = HookChain([RouteTracingHooks(), metrics, RouteLoggingHooks(), guard])
    clients = _Clients()
    router = PipelineRouter(SPEC, _Routing(), RouterOptions(bootstrap="none:9092"), hooks,
                            clients=clients)  # fmt: skip
    router.outbox.assign([(router._ingress, 0), (router._inbox, 0)])
    return router, clients.made


def _replies(router: PipelineRouter, producer: _Producer, offset: int) -> list[_Message]:
    """The stage's reply to every dispatch sent so far, as the stage would encode it."""
    out = []
    for value, headers in producer.dispatches:
        request = decode_envelope(value)
        reply = encode_reply_envelope(request, request.fields, "noop", "1")
        meta = [(k, v) for k, v in headers if k in ("stage", "attempt")]
        out.append(_Message(router._inbox, request.request_id.encode(), reply, meta, offset))
        offset += 1
    producer.dispatches.clear()
    return out


def run(n: int) -> float:
    """Seconds of the routing thread per request, over ``n`` requests in batches."""
    router, producer = _router()
    fields = {"x": PAYLOAD}
    values = [encode_envelope(Envelope(f"r{i}", fields)) for i in range(n)]
    requests = [_Message(router._ingress, f"r{i}".encode(), v, [], i) for i, v in enumerate(values)]
    reply_offset, spent = 0, 0.0
    for at in range(0, n, BATCH):
        batches = [requests[at : at + BATCH]]
        for _ in range(len(SPEC.stages) + 1):
            start = time.process_time()  # the stand-in stage's work is not counted
            router.handle(router.outbox.admit(batches.pop()))
            spent += time.process_time() - start
            batches.append(_replies(router, producer, reply_offset))
            reply_offset += len(batches[-1])
    assert not router._live, f"{len(router._live)} requests not finished"
    return spent / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    configure_logging(json=True, level="WARNING")
    gc.freeze()
    run(2_000)  # warm-up
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(args.requests)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    per = min(run(args.requests) for _ in range(3))
    print(f"router Python per request (2-stage no-op, no broker): {per * 1e6:.1f} us")


if __name__ == "__main__":
    main()
