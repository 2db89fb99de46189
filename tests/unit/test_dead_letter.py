"""Dead letters: the original bytes and headers, cut only where no topic would take them."""

from __future__ import annotations

import hashlib

from modelyard.wire.headers import dead_letter

LIMIT = 1 << 20


def test_a_dead_letter_keeps_the_original_bytes_and_headers_and_says_why() -> None:
    value, headers = dead_letter(
        b"\xff\x00raw", [("traceparent", b"00-x")], "bad", "decode",
        source="yard.m.a.1", max_bytes=LIMIT, stage="a",
    )  # fmt: skip
    assert value == b"\xff\x00raw"
    assert headers[0] == ("traceparent", b"00-x")
    assert dict(headers)["dlq-error"] == b"bad"
    assert dict(headers)["dlq-error-code"] == b"decode"
    assert "dlq-truncated" not in dict(headers)


def test_a_value_too_large_for_any_topic_is_cut_to_fit_with_its_size_and_digest() -> None:
    original = b"x" * (3 * LIMIT)
    huge_header = ("note", b"h" * LIMIT)
    value, headers = dead_letter(
        original, [huge_header, ("small", b"s")], "e" * 100_000, "too_large",
        source="in", max_bytes=LIMIT,
    )  # fmt: skip
    found = dict(headers)
    assert len(value) + sum(len(k) + len(v) for k, v in headers) <= LIMIT
    assert original.startswith(value)
    assert len(value) > LIMIT // 2
    assert found["dlq-truncated"] == str(3 * LIMIT).encode()
    assert found["dlq-sha256"] == hashlib.sha256(original).hexdigest().encode()
    assert "note" not in found
    assert found["small"] == b"s"
    assert len(found["dlq-error"]) == 4096
