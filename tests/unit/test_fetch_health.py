"""Readiness of a consumer whose fetch responses cannot be received."""

from __future__ import annotations

from confluent_kafka import KafkaError
from modelyard.kafka.fetch_health import FetchHealth

TOO_LARGE = KafkaError(
    KafkaError._BAD_MSG,
    "127.0.0.1:9092/1: Receive failed: Invalid response size 102098448 (0..100000000): "
    "increase receive.message.max.bytes",
)


def test_receive_failures_make_it_unready_until_they_stop_for_a_window() -> None:
    now = [0.0]
    health = FetchHealth(window_s=30, clock=lambda: now[0])
    assert health.ok
    health.on_error(TOO_LARGE)
    health.on_error(TOO_LARGE)
    assert not health.ok
    assert health.failures == 2
    now[0] = 29.0
    assert not health.ok
    now[0] = 31.0
    assert health.ok


def test_other_client_errors_do_not_count() -> None:
    health = FetchHealth()
    health.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    health.on_error(KafkaError(KafkaError._BAD_MSG, "FindCoordinator response error"))
    assert health.ok
    assert health.failures == 0
