"""The router's Kafka entry points: ingress (decode, request validation, dispatch encoding,
rejection records) and the reply inbox (reply decode, header metadata, results)."""

from __future__ import annotations

from hypothesis import given

from tests.fuzz.framing import Message
from tests.fuzz.profiles import fuzz_settings
from tests.fuzz.strategies import kafka_messages, reply_messages
from tests.fuzz.targets import check_router_ingress, check_router_reply


@fuzz_settings(1500)
@given(kafka_messages())
def test_any_ingress_message_is_routed_or_rejected(message: Message) -> None:
    check_router_ingress(message)


@fuzz_settings(1000)
@given(reply_messages())
def test_any_inbox_message_is_applied_dropped_or_dead_lettered(message: Message) -> None:
    check_router_reply(message)
