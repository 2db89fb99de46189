"""Every input that ever broke an entry point (``corpus/<entry point>/``), replayed as is."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.framing import Message, frame_message, split_message
from tests.fuzz.profiles import fuzz_settings
from tests.fuzz.strategies import kafka_messages
from tests.fuzz.targets import ENTRY_POINTS

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(
    path for path in CORPUS.glob("*/*") if path.is_file() and path.parent.name in ENTRY_POINTS
)


def test_every_corpus_folder_names_an_entry_point() -> None:
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir()}
    assert folders <= set(ENTRY_POINTS), folders - set(ENTRY_POINTS)


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_corpus_case(path: Path) -> None:
    ENTRY_POINTS[path.parent.name](path.read_bytes())


@fuzz_settings(300)
@given(st.binary(max_size=64))
def test_any_bytes_frame_a_message(data: bytes) -> None:
    split_message(data)  # atheris mutates these bytes: the framing itself must never fail


@fuzz_settings(300)
@given(kafka_messages())
def test_framing_round_trips(message: Message) -> None:
    assert split_message(frame_message(message))[:2] == message[:2]
    assert len(split_message(frame_message(message)).headers) == min(len(message.headers), 15)
