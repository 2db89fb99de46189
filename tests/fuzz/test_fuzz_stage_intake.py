"""A stage's Kafka intake: envelope and OIP JSON values with any headers, validated against a
manifest's tensor specs, answered with a reply the caller can read."""

from __future__ import annotations

from hypothesis import given

from tests.fuzz.framing import Message
from tests.fuzz.profiles import fuzz_settings
from tests.fuzz.strategies import kafka_messages
from tests.fuzz.targets import check_stage_intake


@fuzz_settings(2000)
@given(kafka_messages())
def test_any_message_is_served_or_refused(message: Message) -> None:
    check_stage_intake(message)
