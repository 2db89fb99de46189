"""``modelyard audit verify``: recompute every chain in the store and check every checkpoint.

For each (writer, partition) chain, rows in stored seq order:

- every column must say what the row's record (``raw``) says, and ``chain_hash`` must be the
  sha256 of ``raw``: a changed column or changed bytes is **edited**; a row whose stored seq is
  not the seq its record carries is **reordered**;
- seqs must run 0, 1, 2, ... without a hole: a hole is **deleted**; a seq held twice has one row
  that links into the chain and one **inserted**;
- each record's ``prev`` must be the hash of the record before it: when it is not, that record
  before it is no longer what was written (**edited**);
- each checkpoint must be signed by a ``writer`` key of the keyring over its facts, and its head
  must be the hash of the row at its seq (**checkpoint**);
- rows after a chain's last good checkpoint are its **unsigned tail** (reported, not a problem:
  a live writer always has one until its next checkpoint);
- captured payload rows must equal the payloads their hop's record carries (a missing one is
  deleted, one no record carries inserted); rows without any chain are **unchained**: nothing
  can vouch for them.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Literal

from modelyard.audit.chain import GENESIS, checkpoint_payload, record_hash
from modelyard.audit.store import (
    AuditStore,
    CheckpointRow,
    HopRow,
    PayloadRow,
    RequestRow,
    parse_record,
)
from modelyard.errors import DecodeError, UnauthenticatedError
from modelyard.keys import Keyring

__all__ = ["ChainSummary", "Problem", "Tail", "VerifyReport", "check_checkpoint", "verify_store"]

Kind = Literal["edited", "deleted", "inserted", "reordered", "checkpoint", "unchained"]
Row = RequestRow | HopRow
ChainKey = tuple[str, int]


@dataclass(frozen=True)
class Problem:
    """One thing wrong, where it is."""

    kind: Kind
    detail: str
    writer: str | None = None
    partition: int | None = None
    seq: int | None = None  # or the first seq of a hole
    last_seq: int | None = None  # the last seq of a hole
    table: str | None = None
    row_id: int | None = None

    def line(self) -> str:
        where = []
        if self.writer is not None:
            where.append(f"writer={self.writer} partition={self.partition}")
        if self.seq is not None:
            span = f"{self.seq}..{self.last_seq}" if self.last_seq not in (None, self.seq) else ""
            where.append(f"seq={span or self.seq}")
        if self.table is not None:
            where.append(f"{self.table}.id={self.row_id}")
        return f"{self.kind.upper():<10} {' '.join(where)}: {self.detail}"


@dataclass(frozen=True)
class Tail:
    """Records of a chain after its last good checkpoint."""

    writer: str
    partition: int
    first: int
    last: int
    count: int

    def line(self) -> str:
        return (
            f"unsigned tail: writer={self.writer} partition={self.partition} "
            f"seq={self.first}..{self.last} ({self.count} records after the last checkpoint)"
        )


@dataclass(frozen=True)
class ChainSummary:
    writer: str
    partition: int
    records: int
    checkpoints: int  # good ones
    signed_to: int | None  # the highest seq a good checkpoint covers


@dataclass
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    tails: list[Tail] = field(default_factory=list)
    chains: list[ChainSummary] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [
            f"chain writer={c.writer} partition={c.partition}: {c.records} records, "
            f"{c.checkpoints} good checkpoints, signed to seq "
            f"{'-' if c.signed_to is None else c.signed_to}"
            for c in self.chains
        ]
        out += [p.line() for p in self.problems]
        out += [t.line() for t in self.tails]
        records = sum(c.records for c in self.chains)
        verdict = "ok" if self.ok else f"FAILED, {len(self.problems)} problems"
        out.append(f"verify: {verdict} ({records} chained records in {len(self.chains)} chains)")
        return out


def verify_store(store: AuditStore, keyring: Keyring) -> VerifyReport:
    """Check everything in ``store`` (see the module docstring)."""
    report = VerifyReport()
    checkpoints: dict[ChainKey, list[CheckpointRow]] = defaultdict(list)
    for cp in store.checkpoints():
        checkpoints[(cp.writer, cp.chain_partition)].append(cp)
    expected_payloads: dict[tuple[object, ...], PayloadRow] = {}
    seen: set[ChainKey] = set()
    for key, rows in itertools.groupby(store.chain_rows(), key=_chain_of):
        chain_rows = list(rows)
        for row in chain_rows:
            _expect_payloads(row, expected_payloads)
        if key is None:
            report.problems.extend(_unchained(chain_rows))
            continue
        seen.add(key)
        _verify_chain(key, chain_rows, checkpoints.get(key, []), keyring, report)
    for key in checkpoints.keys() - seen:  # a checkpoint over a chain with no rows left
        _verify_chain(key, [], checkpoints[key], keyring, report)
    holes = _holes(report.problems)
    payload_problems = _payload_problems(store.payload_rows(), expected_payloads)
    report.problems.extend(p for p in payload_problems if not _in_hole(p, holes))
    return report


def _holes(problems: list[Problem]) -> dict[ChainKey, list[tuple[int, int]]]:
    """The deleted ranges of each chain: a payload of a deleted hop is that hop's deletion."""
    holes: dict[ChainKey, list[tuple[int, int]]] = defaultdict(list)
    for p in problems:
        if p.kind == "deleted" and p.writer is not None and p.partition is not None:
            holes[(p.writer, p.partition)].append((p.seq or 0, p.last_seq or p.seq or 0))
    return holes


def _in_hole(problem: Problem, holes: dict[ChainKey, list[tuple[int, int]]]) -> bool:
    if problem.writer is None or problem.partition is None or problem.seq is None:
        return False
    ranges = holes.get((problem.writer, problem.partition), [])
    return any(first <= problem.seq <= last for first, last in ranges)


def _chain_of(row: Row) -> ChainKey | None:
    if row.chain_writer is None or row.chain_partition is None:
        return None
    return row.chain_writer, row.chain_partition


# one chain ---------------------------------------------------------------------------------
def _verify_chain(
    key: ChainKey,
    rows: list[Row],
    checkpoints: list[CheckpointRow],
    keyring: Keyring,
    report: VerifyReport,
) -> None:
    writer, partition = key
    problems: list[Problem] = []
    flagged: set[int] = set()  # ids of rows already reported
    for row in rows:
        problem = _row_problem(row)
        if problem is not None:
            problems.append(problem)
            flagged.add(row.id)
    chain = _links(key, rows, flagged, problems)
    hashes = {_seq(r): record_hash(r.raw) for r in chain}
    signed_to, good = None, 0
    for cp in checkpoints:
        problem = check_checkpoint(cp, keyring, hashes)
        if problem is None:
            good += 1
            signed_to = cp.seq if signed_to is None else max(signed_to, cp.seq)
        else:
            problems.append(problem)
    report.problems.extend(problems)
    report.chains.append(ChainSummary(writer, partition, len(rows), good, signed_to))
    tail = [r for r in chain if signed_to is None or _seq(r) > signed_to]
    if tail:
        first, last = _seq(tail[0]), _seq(tail[-1])
        report.tails.append(Tail(writer, partition, first, last, len(tail)))


def _links(key: ChainKey, rows: list[Row], flagged: set[int], problems: list[Problem]) -> list[Row]:
    """Walk the chain in stored seq order; returns the rows that make it (one per seq)."""
    writer, partition = key
    chain: list[Row] = []
    expected, before = 0, None
    groups = [(seq, list(group)) for seq, group in itertools.groupby(rows, key=_seq)]
    for i, (seq, candidates) in enumerate(groups):
        if seq > expected:
            problems.append(Problem(
                "deleted", f"{seq - expected} records missing: the chain has a hole",
                writer, partition, expected, seq - 1,
            ))  # fmt: skip
            before = None  # nothing to link to across a hole
        following = groups[i + 1][1] if i + 1 < len(groups) and groups[i + 1][0] == seq + 1 else []
        row = _genuine(candidates, before, following)
        for other in candidates:
            if other is not row:
                problems.append(_at(other, "inserted", "a second record at a seq already taken"))
                flagged.add(other.id)
        _check_link(row, before, seq, flagged, problems)
        chain.append(row)
        expected, before = seq + 1, row
    return chain


def _check_link(
    row: Row, before: Row | None, seq: int, flagged: set[int], problems: list[Problem]
) -> None:
    """A record whose ``prev`` is not the hash of the one before: that one was changed."""
    if row.id in flagged:
        return
    if before is not None and before.id not in flagged and _prev(row) != record_hash(before.raw):
        detail = f"its bytes no longer hash to the prev that seq {seq} links to"
        problems.append(_at(before, "edited", detail))
        flagged.add(before.id)
    elif before is None and seq == 0 and _prev(row) != GENESIS:
        problems.append(_at(row, "edited", "the first record does not start the chain"))


def _genuine(candidates: list[Row], before: Row | None, following: list[Row]) -> Row:
    """Of the rows at one seq, the one that best fits the chain: it says what its record says,
    links to the record before it, and the record after it links to it (ties: the first)."""
    if len(candidates) == 1:
        return candidates[0]
    link = record_hash(before.raw) if before is not None else None
    nexts = {_prev(r) for r in following}

    def fit(row: Row) -> int:
        own = record_hash(row.raw)
        return (_row_problem(row) is None) + (_prev(row) == link) + (own in nexts)

    return max(candidates, key=fit)  # max keeps the first of equals


def _row_problem(row: Row) -> Problem | None:
    """Whether the row says what its record says (edited / reordered), else None."""
    try:
        parsed = parse_record(row.raw)
    except DecodeError as exc:
        return _at(row, "edited", f"its stored record no longer parses ({exc.message})")
    expected = parsed.request if isinstance(row, RequestRow) else parsed.hop
    if expected is None or type(expected) is not type(row):
        return _at(row, "edited", "its stored record is of another kind")
    differing = [
        f.name for f in fields(row)
        if f.name != "id" and getattr(row, f.name) != getattr(expected, f.name)
    ]  # fmt: skip
    if differing == ["chain_seq"]:
        return _at(row, "reordered", f"stored at seq {row.chain_seq}; its record is seq "
                   f"{expected.chain_seq}")  # fmt: skip
    if differing:
        return _at(row, "edited", f"{', '.join(differing)} differ from its record")
    return None


def check_checkpoint(cp: CheckpointRow, keyring: Keyring, hashes: dict[int, str]) -> Problem | None:
    where = (cp.writer, cp.chain_partition, cp.seq)
    try:
        parsed = parse_record(cp.raw).checkpoint
    except DecodeError as exc:
        return Problem("checkpoint", f"stored record does not parse ({exc.message})", *where,
                       table="checkpoints", row_id=cp.id)  # fmt: skip
    if (
        parsed is None
        or [getattr(parsed, f.name) for f in fields(cp)][1:]
        != [getattr(cp, f.name) for f in fields(cp)][1:]
    ):
        return Problem("checkpoint", "columns differ from its record", *where,
                       table="checkpoints", row_id=cp.id)  # fmt: skip
    at = _checkpoint_at(cp.raw)
    payload = checkpoint_payload(cp.writer, cp.chain_partition, cp.seq, cp.head, at)
    try:
        entry = keyring.verify(cp.key_id, payload, cp.signature)
    except UnauthenticatedError as exc:
        return Problem("checkpoint", f"signature not valid: {exc.message}", *where,
                       table="checkpoints", row_id=cp.id)  # fmt: skip
    if entry.role != "writer":
        return Problem("checkpoint", f"signed by {entry.name}, not a writer key", *where,
                       table="checkpoints", row_id=cp.id)  # fmt: skip
    if hashes.get(cp.seq) != cp.head:
        detail = "its head is not the hash of the record at its seq"
        if cp.seq not in hashes:
            detail = "the record it signs is not in the store"
        return Problem("checkpoint", detail, *where, table="checkpoints", row_id=cp.id)
    return None


def _checkpoint_at(raw: bytes) -> str:
    """The ``at`` text exactly as signed (the parsed time would re-format it)."""
    return str(json.loads(raw)["at"])


# payloads and unchained rows ---------------------------------------------------------------
def _payload_key(p: PayloadRow) -> tuple[object, ...]:
    return (p.chain_writer, p.chain_partition, p.chain_seq, p.request_id, p.stage, p.attempt,
            p.role, p.direction)  # fmt: skip


def _expect_payloads(row: Row, expected: dict[tuple[object, ...], PayloadRow]) -> None:
    if isinstance(row, HopRow):
        try:
            payloads = parse_record(row.raw).payloads
        except DecodeError:
            return  # reported with the row
        for payload in payloads:
            expected[_payload_key(payload)] = payload


def _payload_problems(
    stored: Iterable[PayloadRow], expected: dict[tuple[object, ...], PayloadRow]
) -> Iterator[Problem]:
    for row in stored:
        key = _payload_key(row)
        want = expected.pop(key, None)
        where = (row.chain_writer, row.chain_partition, row.chain_seq)
        if want is None:
            yield Problem("inserted", f"a {row.direction} payload no hop record carries", *where,
                          table="payloads", row_id=row.id)  # fmt: skip
        elif (want.digest, want.fields, want.bytes) != (row.digest, row.fields, row.bytes):
            yield Problem("edited", f"the {row.direction} payload differs from its hop record",
                          *where, table="payloads", row_id=row.id)  # fmt: skip
    for want in expected.values():
        where = (want.chain_writer, want.chain_partition, want.chain_seq)
        yield Problem("deleted", f"the {want.direction} payload of a hop record is missing",
                      *where, table="payloads")  # fmt: skip


def _unchained(rows: list[Row]) -> list[Problem]:
    out = []
    for row in rows:
        problem = _row_problem(row)
        out.append(problem or _at(row, "unchained", "in no writer's chain: nothing vouches for it"))
    return out


# small helpers -----------------------------------------------------------------------------
def _seq(row: Row) -> int:
    return row.chain_seq if row.chain_seq is not None else -1


def _prev(row: Row) -> str | None:
    return row.chain_prev


def _at(row: Row, kind: Kind, detail: str) -> Problem:
    table = "requests" if isinstance(row, RequestRow) else "hops"
    return Problem(kind, detail, row.chain_writer, row.chain_partition, row.chain_seq, None,
                   table, row.id)  # fmt: skip
