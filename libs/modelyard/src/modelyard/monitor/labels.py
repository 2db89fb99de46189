"""Labels: a reviewer's verdict on what a stage answered for one request, joined with the hops
the monitor saw to count accuracy per version.

A label is a signed document (``signed.py``) on ``<prefix>.labels``, keyed by request id (the
audit topic's key, and the same partition count, so a label lands on the partition of its
request's hop records)::

    {"schema": 1, "kind": "label", "request_id": "r1", "stage": "sentiment",
     "field": "label", "value": "negative", "at": "2026-12-07T01:00:00Z",
     "signer": "alice", "key_id": "...", "signature": "..."}

``field`` names the monitored output judged (left out: the stage's one categorical output).
Each version that answered that request's stage (active, canary or shadow) is correct when its
observed value equals ``value``. The reviewer is the key that signed the label, never a name the
label claims. Labels are counted in the window of their ``at``.

The monitor remembers the monitored values of the last ``capacity`` hops per partition, in
memory: a label for a request it no longer remembers (older, or seen before a restart) is
counted as unmatched, not guessed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelyard.errors import DecodeError
from modelyard.keys import Keyring, SigningKey
from modelyard.monitor.hops import Hop, WindowKey
from modelyard.monitor.signed import sign_document, verified_document
from modelyard.monitor.summary import iso, parse_iso

__all__ = ["Label", "LabelJoin", "encode_label", "labels_topic", "parse_label"]


def labels_topic(prefix: str) -> str:
    return f"{prefix}.labels"


@dataclass(frozen=True, slots=True)
class Label:
    request_id: str
    stage: str
    value: str
    at: float
    reviewer: str
    field: str | None = None


def encode_label(label: Label, key: SigningKey) -> bytes:
    """The signed label record (its reviewer is ``key``'s name)."""
    document: dict[str, Any] = {
        "schema": 1, "kind": "label", "request_id": label.request_id, "stage": label.stage,
        "value": label.value, "at": iso(label.at),
    }  # fmt: skip
    if label.field is not None:
        document["field"] = label.field
    return sign_document(document, key)


def parse_label(value: bytes, keyring: Keyring | None) -> Label:
    """A verified label; DecodeError or UnauthenticatedError."""
    document, reviewer = verified_document(value, keyring)
    try:
        if document.get("kind") != "label":
            raise ValueError("not a label")
        field = document.get("field")
        return Label(
            request_id=str(document["request_id"]), stage=str(document["stage"]),
            value=str(document["value"]), at=parse_iso(document["at"]), reviewer=reviewer,
            field=None if field is None else str(field),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"not a label record: {exc!r}") from None


Seen = tuple[WindowKey, Mapping[str, str | float]]


class LabelJoin:
    """The monitored values of recent hops, by (request id, stage), for labels to meet."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[tuple[str, str], list[Seen]] = OrderedDict()

    def remember(self, hop: Hop) -> None:
        if not any(isinstance(v, str) for v in hop.observed.values()):
            return  # nothing a label could be compared with
        key = (hop.request_id, hop.key.stage)
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = []
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
        seen[:] = [s for s in seen if s[0] != hop.key]  # a redelivered hop replaces its copy
        seen.append((hop.key, hop.observed))

    def verdicts(self, label: Label) -> list[tuple[WindowKey, bool]]:
        """Per version that answered the label's request and stage: whether it was right
        (empty: the monitor does not remember that request)."""
        out = []
        for key, observed in self._seen.get((label.request_id, label.stage), []):
            name = label.field or _only_categorical(observed)
            answer = observed.get(name) if name else None
            if isinstance(answer, str):
                out.append((key, answer == label.value))
        return out


def _only_categorical(observed: Mapping[str, str | float]) -> str | None:
    names = [n for n, v in observed.items() if isinstance(v, str)]
    return names[0] if len(names) == 1 else None
