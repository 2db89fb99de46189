"""Records read off Kafka by the control plane (``yard.control``) and ``modelyard trace``
(``yard.audit``)."""

from __future__ import annotations

from hypothesis import given

from tests.fuzz.document_strategies import audit_values, control_values
from tests.fuzz.profiles import fuzz_settings
from tests.fuzz.targets import check_audit_record, check_control_record


@fuzz_settings(1500)
@given(control_values())
def test_any_control_value_is_a_record_or_skipped(value: bytes) -> None:
    check_control_record(value)


@fuzz_settings(1500)
@given(audit_values())
def test_any_audit_value_is_a_record_or_unreadable(value: bytes) -> None:
    check_audit_record(value)
