"""Pairing primary and shadow replies, what an auditor may commit, and output agreement."""

from __future__ import annotations

import numpy as np
from modelyard.shadows.pairs import ShadowPairs, Side, agrees
from modelyard.wire import Envelope


def _side(rid: str, partition: int = 0, offset: int = -1, seen: float = 0.0) -> Side:
    return Side(Envelope(rid, {"label": ["pos"]}), {}, 0.0, seen, partition, offset)


def test_the_second_half_completes_the_pair_whichever_arrives_first() -> None:
    pairs = ShadowPairs()
    shadow = _side("a")
    assert pairs.add(("a", "s"), "shadow", shadow) is None
    primary = _side("a")
    pair = pairs.add(("a", "s"), "primary", primary)
    assert pair is not None
    assert pair.primary is primary
    assert pair.shadow is shadow
    assert len(pairs) == 0


def test_a_redelivered_half_replaces_the_one_held() -> None:
    pairs = ShadowPairs()
    assert pairs.add(("a", "s"), "primary", _side("a", offset=1)) is None
    assert pairs.add(("a", "s"), "primary", _side("a", offset=7)) is None
    assert len(pairs) == 1
    completed = pairs.add(("a", "s"), "shadow", _side("a", offset=9))
    assert completed is not None
    assert completed.primary is not None
    assert completed.primary.offset == 7


def test_halves_past_the_ttl_expire_as_incomplete_pairs() -> None:
    pairs = ShadowPairs(ttl_s=10)
    pairs.add(("old", "s"), "primary", _side("old", seen=0.0))
    pairs.add(("new", "s"), "shadow", _side("new", seen=8.0))
    expired = pairs.expire(now=12.0)
    assert [(p.primary is not None, p.shadow is None) for p in expired] == [(True, True)]
    assert len(pairs) == 1


def test_dropping_revoked_partitions_forgets_only_their_halves() -> None:
    pairs = ShadowPairs()
    pairs.add(("a", "s"), "primary", _side("a", partition=0, offset=1))
    pairs.add(("b", "s"), "primary", _side("b", partition=1, offset=1))
    assert pairs.drop_partitions({1}) == 1
    assert len(pairs) == 1
    assert pairs.add(("b", "s"), "shadow", _side("b", partition=1, offset=2)) is None


def test_categorical_outputs_decide_agreement_over_probabilities() -> None:
    primary = {"label": np.array(["en"]), "score": np.array([0.9], dtype=np.float32)}
    assert agrees(primary, {"label": np.array(["en"]), "score": np.array([0.4], np.float32)})
    assert not agrees(primary, {"label": np.array(["fr"]), "score": np.array([0.9], np.float32)})
    assert agrees({"y": np.array([1.0])}, {"y": np.array([1.0000001])})
    assert not agrees({"y": np.array([1.0])}, {"z": np.array([1.0])})  # nothing in common
