"""Reading a one-partition topic from its first offset: assign(), no group, nothing committed.

What every reader of the control topic does (:func:`modelyard.control.topic.read_state`, the
:class:`~modelyard.control.follower.ControlFollower`), and what other compacted, one-partition
topics read the same way use too (the monitor's baselines): every reader reads the whole
partition, so the last record per key is known whether or not the broker compacts.

The end is the partition EOF that librdkafka reports (``enable.partition.eof``) at or past the
high watermark read at start: some brokers report "latest" at batch granularity, so the
watermark alone can be short of the true end, while the EOF comes from the fetch itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from modelyard.errors import UnavailableError

__all__ = ["control_consumer", "open_partition"]

_PARTITION = 0  # one partition: one total order of every record
_RETRY_S = 0.1


def control_consumer(
    bootstrap: str,
    kafka: Mapping[str, Any] | None = None,
    *,
    wait_ms: int = 20,
    quiet: bool = False,
) -> Consumer:
    """A consumer for assign()-only reading; ``kafka`` (SASL/SSL, tuning) wins over defaults.

    ``quiet`` silences librdkafka's own log lines (one-shot reads report failures themselves).
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        # required by the client, never joined: assign() only, nothing committed
        "group.id": f"modelyard-control-reader-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": wait_ms,  # a waiting fetch is not woken by new data on every broker
        "log.connection.close": False,
        **({"log_level": 0} if quiet else {}),
        **(kafka or {}),
        "enable.partition.eof": True,  # how a reader knows it has reached the end
    }
    return Consumer(config)


def open_partition(consumer: Consumer, topic: str, timeout_s: float) -> int | None:
    """Assign the control partition from its first offset; the end offset seen now, or None
    when the topic does not exist (yet). UnavailableError when the broker does not answer.

    Retriable errors (a leader being elected just after the topic was created) are retried
    until ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = _watermarks(consumer, topic, max(0.1, deadline - time.monotonic()))
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() in (KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART):
                return None
            if not err.retriable() or time.monotonic() >= deadline:
                raise UnavailableError(f"cannot read {topic}: {err.str()}") from None
            time.sleep(_RETRY_S)  # a retriable error comes back at once: do not spin
            continue
        # an explicit offset: OFFSET_BEGINNING costs an extra offset query (~0.5 s on some brokers)
        consumer.assign([TopicPartition(topic, _PARTITION, max(low, 0))])
        return high


def _watermarks(consumer: Consumer, topic: str, timeout_s: float) -> tuple[int, int]:
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, _PARTITION), timeout=timeout_s)
    return int(low), int(high)
