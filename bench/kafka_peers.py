"""The peers a no-op modelyard stage is compared with, each run as its own process.

* ``bare``: a plain confluent-kafka consume→produce loop, the floor of what any Python service
  can do on this broker: drain with ``consume(n, 0)``, produce each message to the reply topic,
  wait for delivery, then commit (at least once).
* ``quix``: a quixstreams application doing the same no-op, at-least-once.

Both copy the request bytes (key, value, headers) unchanged to a fixed reply topic. Every
target, the modelyard stage included, and the reply reader get the same client settings
(``CONSUMER_SETTINGS``, ``PRODUCER_SETTINGS``): ``fetch.wait.max.ms=2``,
``session.timeout.ms=6000``, classic group protocol, ``linger.ms=5``. Run:
``python -m bench.kafka_peers bare|quix --bootstrap ... ``.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

__all__ = ["CONSUMER_SETTINGS", "PRODUCER_SETTINGS", "run_bare", "run_quix"]

# Shared by every target so the comparison is about the service, not the client tuning.
CONSUMER_SETTINGS: dict[str, Any] = {
    # Tansu does not wake a waiting fetch, so this bounds idle latency on both hops. Measured
    # here, every target alike: 10 ms gave p50 7.8-10.2 ms at 200 req/s, 2 ms gave 4.3-4.5 ms,
    # with no systematic change in burst throughput (more idle fetches for the broker).
    "fetch.wait.max.ms": 2,
    "session.timeout.ms": 6000,  # Tansu holds a join for half of it
    "heartbeat.interval.ms": 1500,
    "group.protocol": "classic",  # KIP-848 is not supported by Tansu
    "auto.offset.reset": "earliest",
}
PRODUCER_SETTINGS: dict[str, Any] = {"linger.ms": 5, "acks": "all"}
BATCH = 1000


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run_bare(bootstrap: str, input_topic: str, reply_topic: str, group: str) -> None:
    """Consume, copy to ``reply_topic``, flush, commit; until SIGTERM."""
    from confluent_kafka import Consumer, Producer  # noqa: PLC0415

    stop = _stop_event()
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
        **CONSUMER_SETTINGS,
    })  # fmt: skip
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
    consumer.subscribe([input_topic])
    print("bare loop started", flush=True)
    try:
        while not stop.is_set():
            msgs = consumer.consume(BATCH, 0) or consumer.consume(1, 0.1)  # drain, then wait
            _copy(producer, reply_topic, [m for m in msgs if m.error() is None])
            if msgs:
                consumer.commit(asynchronous=True)  # replies delivered: positions are answered
    finally:
        producer.flush(10)
        consumer.close()


def _copy(producer: Any, topic: str, msgs: list[Any]) -> None:
    for msg in msgs:
        while True:
            try:
                producer.produce(topic, msg.value(), msg.key(), headers=msg.headers())
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                producer.poll(0.01)
        producer.poll(0)
    if msgs and producer.flush(30) != 0:
        raise RuntimeError("replies not delivered within 30 s")


def run_quix(bootstrap: str, input_topic: str, reply_topic: str, group: str) -> None:
    """A quixstreams no-op pipeline; quixstreams handles SIGTERM itself."""
    from quixstreams import Application  # noqa: PLC0415

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",  # commits every commit_interval (default 5 s)
        consumer_extra_config={
            k: v for k, v in CONSUMER_SETTINGS.items() if k != "auto.offset.reset"
        },
        producer_extra_config=PRODUCER_SETTINGS,
        auto_create_topics=False,  # the driver creates them with the benchmark's partitions
    )
    source = app.topic(input_topic, key_deserializer="bytes", value_deserializer="bytes")
    sink = app.topic(reply_topic, key_serializer="bytes", value_serializer="bytes")
    app.dataframe(source).to_topic(sink)
    print("quix app started", flush=True)
    app.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("peer", choices=["bare", "quix"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input-topic", required=True)
    parser.add_argument("--reply-topic", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args()
    runner = run_bare if args.peer == "bare" else run_quix
    runner(args.bootstrap, args.input_topic, args.reply_topic, args.group)


if __name__ == "__main__":
    main()
