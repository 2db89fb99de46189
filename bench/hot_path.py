"""Python cost per request of a no-op stage's two hot paths, without a broker or a network.

* Kafka: ``StageHandler`` handles consumed batches of 500 (decode, validate, the model run
  inline, reply encode, produce, offset bookkeeping, metrics), with stand-ins for the consumer's
  messages and a producer that acknowledges every record on ``poll``. What librdkafka itself
  costs (produce, its threads, delivery reports) is not in this figure.
* gRPC: the stage's ``OipServicer.ModelInfer`` awaited directly, against the bare servicer that
  ``make bench`` measures (``bench.grpc_peers``), with the same request.

For finding where a stage's time goes between runs of ``make bench``; a report, not a target:

    python -m bench.hot_path [--requests N] [--profile kafka|grpc]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelyard.api.oip.v2 import grpc_service_pb2 as pb
from modelyard.kafka.delivery import PartitionCounts
from modelyard.kafka.handler import Outbox
from modelyard.kafka.offsets import OffsetTracker
from modelyard.repository.store import ModelRepository
from modelyard.stage.batcher import Batcher
from modelyard.stage.core import StageCore
from modelyard.stage.grpc_adapter import OipServicer
from modelyard.stage.kafka_adapter import StageHandler
from modelyard.telemetry import HookChain, LoggingHooks, MetricsHooks, TracingHooks
from modelyard.telemetry.logging import configure_logging
from prometheus_client import CollectorRegistry

from bench.grpc_peers import _bare_servicer
from bench.kafka_bench import PAYLOAD, request
from bench.noop_repo import MODEL, write_noop_repo

BATCH = 500  # what the stage takes from the consumer at most per call
PARTITIONS = 4


class _Message:
    """The parts of ``confluent_kafka.Message`` the stage reads."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_value")

    def __init__(self, key: bytes, value: bytes, headers: list[Any], offset: int, part: int):
        self._key, self._value, self._headers = key, value, headers
        self._offset, self._partition = offset, part

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[Any]:
        return self._headers

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None


class _AckingProducer:
    """Keeps each record's delivery callback and acknowledges them all on ``poll``."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[Any, Any], None]] = []

    def produce(self, *_args: Any, on_delivery: Callable[[Any, Any], None], **_kw: Any) -> None:
        self._callbacks.append(on_delivery)

    def poll(self, _timeout: float = 0) -> int:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(None, None)
        return len(callbacks)

    def __len__(self) -> int:
        return len(self._callbacks)


def _core(repository: Path) -> StageCore:
    model = ModelRepository(repository).load(MODEL, verify=True)
    manifest = model.manifest
    hooks = HookChain([
        TracingHooks(manifest.name, manifest.version, "in"),  # off: no SDK, as in make bench
        MetricsHooks(manifest.name, manifest.version, CollectorRegistry()),
        LoggingHooks(),
    ])  # fmt: skip
    batcher = Batcher(model, manifest.batching, hooks)
    batcher.start()
    return StageCore(model, batcher, hooks)


def kafka_path(core: StageCore, n: int) -> Callable[[], None]:
    """One pass of ``n`` requests through a fresh handler; returns the pass to time."""
    messages = []
    for i in range(n):
        key, value, headers = request(f"b{i:015d}", "out")
        messages.append(_Message(key, value, headers, i // PARTITIONS, i % PARTITIONS))

    def one_pass() -> None:
        # the loop's part: tickets from an outbox, acknowledgements served by a poll
        producer = _AckingProducer()
        outbox = Outbox(producer, OffsetTracker(), core.hooks)  # type: ignore[arg-type]
        outbox.assign([("in", p) for p in range(PARTITIONS)])
        replies = PartitionCounts(lambda _topic: 0)
        handler = StageHandler(outbox, core, prefix="yard", reply_partitions=replies)
        for start in range(0, n, BATCH):
            handler.handle(outbox.admit(messages[start : start + BATCH]))  # type: ignore[arg-type]
            producer.poll(0)

    return one_pass


def grpc_path(servicer: Any, n: int) -> Callable[[], None]:
    infer = pb.ModelInferRequest(
        model_name="noop", id="r1", raw_input_contents=[PAYLOAD.tobytes()],
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[24])],
    )  # fmt: skip
    context = _Context()

    async def calls() -> None:
        for _ in range(n):
            await servicer.ModelInfer(infer, context)

    return lambda: asyncio.run(calls())


class _Context:
    """The parts of a ``grpc.aio`` servicer context that ModelInfer reads."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("user-agent", "grpc-python-asyncio"),)

    def time_remaining(self) -> None:
        return None

    async def abort(self, code: Any, message: str) -> None:
        raise RuntimeError(f"{code}: {message}")


def _us_per_request(run: Callable[[], None], n: int, rounds: int = 3) -> float:
    run()  # warm: the model gets timed, caches fill
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--profile", choices=["kafka", "grpc"], help="cProfile one pass of it")
    args = parser.parse_args()
    configure_logging(json=True)  # as a service runs: per-request lines are DEBUG, filtered
    with tempfile.TemporaryDirectory(prefix="modelyard-hot-path-") as tmp:
        write_noop_repo(Path(tmp))
        core = _core(Path(tmp))
        try:
            _measure(core, args.requests, args.profile, Path(tmp) / "pass.prof")
        finally:
            core.batcher.stop()


def _measure(core: StageCore, n: int, profile: str | None, stats: Path) -> None:
    gc.freeze()  # as a stage does after start-up
    gc.set_threshold(50_000, 20, 20)
    paths = {
        "kafka": kafka_path(core, n),
        "grpc": grpc_path(OipServicer(core), n),
        "grpc-bare": grpc_path(_bare_servicer(), n),
    }
    if profile:
        cProfile.runctx("run()", {}, {"run": paths[profile]}, str(stats))
        pstats.Stats(str(stats)).sort_stats("tottime").print_stats(30)
        return
    print("Python per request, best of 3 passes, no broker or network (us)")
    for name, run in paths.items():
        print(f"  {name:<10} {_us_per_request(run, n):6.2f}")
    print("  (the gRPC figures are the handlers alone; grpc.aio's own per-call work is extra)")


if __name__ == "__main__":
    main()
