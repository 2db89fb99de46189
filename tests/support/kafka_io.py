"""Producing requests and collecting replies on the real broker, for tests and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, Producer, TopicPartition

__all__ = ["Collector", "produce_all"]


def produce_all(
    bootstrap: str, topic: str, records: Iterable[tuple[str, bytes, list[tuple[str, bytes]]]]
) -> int:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 32 << 20}
    )
    count = 0
    for key, value, headers in records:
        producer.produce(topic, value, key, headers=headers)
        producer.poll(0)
        count += 1
    assert producer.flush(30) == 0, "not every request was delivered"
    return count


@dataclass
class Collector:
    """Reads a topic from the beginning with assign() (no group join), until a condition holds."""

    bootstrap: str
    topic: str
    partitions: int = 1

    def __post_init__(self) -> None:
        self.messages: list[Message] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"collector-{self.topic}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        self._consumer.assign([TopicPartition(self.topic, p, 0) for p in range(self.partitions)])

    def until(self, done: Callable[[list[Message]], bool], timeout: float = 60) -> list[Message]:
        deadline = time.monotonic() + timeout
        while not done(self.messages):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.topic}: condition not met; have {len(self.messages)} messages"
                )
            msg = self._consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                self.messages.append(msg)
        return self.messages

    def close(self) -> None:
        self._consumer.close()
