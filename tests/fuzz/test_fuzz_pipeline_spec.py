"""The pipeline spec loader (YAML with lines, schema, wiring, conditions) on hostile text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.document_strategies import spec_texts
from tests.fuzz.profiles import fuzz_settings
from tests.fuzz.targets import ENTRY_POINTS, check_pipeline_spec


@fuzz_settings(1500)
@given(spec_texts())
def test_any_spec_text_loads_or_is_refused(text: str) -> None:
    check_pipeline_spec(text)


@fuzz_settings(300)
@given(spec_texts(), st.binary(min_size=1, max_size=3), st.integers(0, 10_000))
def test_any_spec_file_loads_or_is_refused(text: str, junk: bytes, at: int) -> None:
    data = text.encode("utf-8", "surrogatepass")
    at = at % (len(data) + 1)
    ENTRY_POINTS["pipeline_spec"](data[:at] + junk + data[at:])  # often no longer UTF-8
