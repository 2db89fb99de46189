"""How the gateway hands replies to asyncio: a reader thread, or a task polling the consumer.

Both variants read the same private reply topic; a fake router (tests/support) answers. The
thread variant is what ``modelyard.gateway.kafka.KafkaLink`` does: a thread blocking in
``consume``/``poll`` that hands each drained batch to the loop with one
``call_soon_threadsafe``. The task variant polls with ``consume(n, 0)`` on the loop and sleeps
``IDLE_S`` between empty polls (a blocking poll on the loop would stall every other call).
Reported: sequential round-trip p50/p99, CPU seconds per 1,000 requests of a concurrent burst
(process CPU, fake router included, so only the difference between the rows means anything),
and the CPU share the process burns with nothing in flight.

    python -m bench.gateway_dispatch [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import numpy as np
from modelyard.broker import EmbeddedBroker
from modelyard.gateway import PipelineGateway
from modelyard.gateway.kafka import KafkaLink, parse_reply

from tests.support.fake_router import running_fake_router

IDLE_S = 0.002  # the task variant's sleep between empty polls: its latency/CPU trade-off


class PollingLink(KafkaLink):
    """KafkaLink whose reader is an asyncio task instead of a thread."""

    def _run(self, loop: asyncio.AbstractEventLoop, on_events: Any) -> None:
        self._task = asyncio.run_coroutine_threadsafe(self._poll(on_events), loop)

    async def _poll(self, on_events: Any) -> None:
        assert self._producer is not None
        assert self._consumer is not None
        while not self._stop.is_set():
            self._producer.poll(0)
            messages = self._consumer.consume(500, 0)
            events = [e for m in messages if (e := parse_reply(m)) is not None]
            if events:
                on_events(events)
            else:
                await asyncio.sleep(IDLE_S)


async def measure(gateway: PipelineGateway, requests: int) -> dict[str, float]:
    await gateway.submit("echo", {"text": [b"warm"]})
    latencies = []
    for k in range(200):
        start = time.perf_counter()
        await gateway.submit("echo", {"text": [f"s{k}".encode()]})
        latencies.append((time.perf_counter() - start) * 1000)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(gateway.submit("echo", {"text": [b"b%d" % k]}) for k in range(requests)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    idle = time.process_time()
    await asyncio.sleep(2.0)  # nothing in flight: what waiting for replies costs by itself
    idle = (time.process_time() - idle) / 2.0
    return {
        "idle_cpu": idle,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "burst_req_s": requests / wall,
        "cpu_s_per_1k": cpu / requests * 1000,
    }


async def run_variant(
    bootstrap: str, prefix: str, polling: bool, requests: int
) -> dict[str, float]:
    gateway = PipelineGateway(bootstrap, topic_prefix=prefix)
    if polling:
        gateway._link = PollingLink(bootstrap, gateway.reply_topic)
    async with gateway:
        return await measure(gateway, requests)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with EmbeddedBroker() as broker:
        for name, polling in (("reader thread", False), ("polling task", True)):
            prefix = f"bench-{uuid.uuid4().hex[:8]}"
            with running_fake_router(broker.bootstrap, prefix, "echo"):
                r = asyncio.run(run_variant(broker.bootstrap, prefix, polling, args.requests))
            print(f"{name:<14} p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                  f"burst {r['burst_req_s']:7.0f} req/s  cpu {r['cpu_s_per_1k']:.3f} s/1k req  "
                  f"idle cpu {r['idle_cpu'] * 100:.1f} %")  # fmt: skip


if __name__ == "__main__":
    main()
