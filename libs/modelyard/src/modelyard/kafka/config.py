"""librdkafka settings for a stage's consumer and producer.

Defaults follow what was measured on the embedded broker and hold on any Kafka cluster: a short
``fetch.wait.max.ms`` for latency, a moderate session timeout (joins wait half of it on some
brokers), manual commits, an idempotent producer. Anything in ``extra`` (SASL/SSL, tuning) wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "BACKGROUND_CONSUMER",
    "BACKGROUND_PRODUCER",
    "MAX_MESSAGE_BYTES",
    "RECEIVE_MAX_BYTES",
    "SECRET_KEYS",
    "consumer_config",
    "producer_config",
    "redacted",
]

# The largest record modelyard produces, and the max.message.bytes of every topic it creates, so
# a cluster refuses a larger one at produce time. Request limits (a stage's manifest, the
# router's max_request_bytes) sit below it, so a dead letter can carry what they refuse.
MAX_MESSAGE_BYTES = 32 << 20
# librdkafka's largest receive buffer. Below it, one record larger than the buffer on a broker
# that does not enforce max.message.bytes (the embedded one does not) makes every fetch of its
# partition fail ("Invalid response size"), and the consumer stalls for good. Received, it is
# refused as too large and dead-lettered like any other; a buffer is only as large as what comes.
RECEIVE_MAX_BYTES = 2**31 - 1

# For clients off the request path (the shadow auditor reads and writes so): fewer, larger fetches
# and batches. On the embedded broker every fetch and produce request costs CPU the primary path
# shares, and a fetch's cost grows with the batches a partition holds (see docs/performance.md).
BACKGROUND_CONSUMER: dict[str, Any] = {"fetch.wait.max.ms": 250, "fetch.min.bytes": 1 << 20}
BACKGROUND_PRODUCER: dict[str, Any] = {"linger.ms": 50}


# librdkafka settings whose values are secrets: never in a log line, a repr or an error message.
SECRET_KEYS = frozenset({
    "sasl.password",
    "sasl.oauthbearer.client.secret",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.keystore.password",
    "ssl_key",  # the Python client's alias of ssl.key.pem
})  # fmt: skip
_HIDDEN = "**********"


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` fit to log or print: every value of :data:`SECRET_KEYS` is ``**********``."""
    return {key: _HIDDEN if key in SECRET_KEYS else value for key, value in config.items()}


def consumer_config(
    bootstrap: str, group_id: str, extra: Mapping[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,  # always explicit: offsets belong to the model version's group
        "enable.auto.commit": False,  # commit only what has been answered
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",  # a new group must not skip requests already queued
        # librdkafka's default, said out loud: exactly-once writers' aborted records are never
        # read (docs/delivery.md)
        "isolation.level": "read_committed",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1500,
        "fetch.wait.max.ms": 10,
        "fetch.max.bytes": 64 << 20,
        "max.partition.fetch.bytes": 16 << 20,
        "receive.message.max.bytes": RECEIVE_MAX_BYTES,
        "log.connection.close": False,  # brokers close idle connections; that is not news
    }
    config.update(overrides)
    config.update(extra or {})
    return config


def producer_config(
    bootstrap: str, extra: Mapping[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        "message.max.bytes": MAX_MESSAGE_BYTES,  # larger: refused at produce(), not by a broker
        "compression.type": "none",
        "log.connection.close": False,
    }
    config.update(overrides)
    config.update(extra or {})
    return config
