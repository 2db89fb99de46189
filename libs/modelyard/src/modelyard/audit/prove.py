"""``modelyard audit prove REQUEST_ID``: the evidence that one request's records are in a signed
chain, as lines a person can check by hand.

For each chain holding the request's records: each record's position and hash; every link from
the first of them up to the first checkpoint at or after the last of them (each record's
``prev`` equals the hash of the one before); and that checkpoint's facts, signature and whether
it verifies against the keyring and names the last link's hash as its head.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from modelyard.audit.chain import record_hash
from modelyard.audit.store import AuditStore, CheckpointRow, Filters, HopRow, RequestRow
from modelyard.audit.verify import check_checkpoint
from modelyard.keys import Keyring

__all__ = ["Proof", "prove_request"]

_SHOWN_LINKS = 20  # links listed one per line; longer runs are summarised


@dataclass
class Proof:
    lines: list[str] = field(default_factory=list)
    proven: bool = True


def prove_request(
    store: AuditStore, keyring: Keyring, request_id: str, *, all_links: bool = False
) -> Proof:
    """The evidence for ``request_id`` (``proven`` False when a link or checkpoint fails, or a
    record is in no chain or after the last checkpoint)."""
    proof = Proof()
    rows = list(store.query(Filters(request_id=request_id)))
    if not rows:
        return Proof([f"no records of request {request_id!r} in the store"], proven=False)
    chains: dict[tuple[str, int], list[RequestRow | HopRow]] = defaultdict(list)
    for row in rows:
        proof.lines.append(_record_line(row))
        if row.chain_writer is None or row.chain_partition is None:
            proof.proven = False
            continue
        chains[(row.chain_writer, row.chain_partition)].append(row)
    for (writer, partition), mine in sorted(chains.items()):
        _prove_chain(store, keyring, (writer, partition), mine, proof, all_links=all_links)
    proof.lines.append(f"prove: {'PROVEN' if proof.proven else 'NOT PROVEN'} {request_id}")
    return proof


def _record_line(row: RequestRow | HopRow) -> str:
    what = (
        "request"
        if isinstance(row, RequestRow)
        else f"hop {row.stage} {row.model}:{row.version} {row.role}"
    )
    if row.chain_writer is None:
        return f"{what}: not chained (nothing vouches for it)"
    return (
        f"{what}: writer={row.chain_writer} partition={row.chain_partition} "
        f"seq={row.chain_seq} hash={record_hash(row.raw)}"
    )


def _prove_chain(
    store: AuditStore,
    keyring: Keyring,
    chain: tuple[str, int],
    mine: list[RequestRow | HopRow],
    proof: Proof,
    *,
    all_links: bool,
) -> None:
    writer, partition = chain
    seqs = [r.chain_seq for r in mine if r.chain_seq is not None]
    first, last = min(seqs), max(seqs)
    checkpoint = _covering(store.checkpoints(writer), partition, last)
    end = checkpoint.seq if checkpoint is not None else last
    segment = store.chain_segment(writer, partition, max(0, first - 1), end)
    proof.lines.append(f"chain writer={writer} partition={partition}: links {first}..{end}")
    broken = _check_links(segment, first, end, proof, all_links)
    if broken:
        proof.proven = False
    if checkpoint is None:
        proof.lines.append("  no checkpoint signs these records yet (unsigned tail)")
        proof.proven = False
        return
    _show_checkpoint(checkpoint, keyring, segment, proof)


def _covering(checkpoints: list[CheckpointRow], partition: int, seq: int) -> CheckpointRow | None:
    """The first checkpoint of ``partition`` at or after ``seq``."""
    after = [c for c in checkpoints if c.chain_partition == partition and c.seq >= seq]
    return min(after, key=lambda c: c.seq) if after else None


def _check_links(
    segment: list[RequestRow | HopRow], first: int, end: int, proof: Proof, all_links: bool
) -> bool:
    by_seq = {r.chain_seq: r for r in segment}
    broken = False
    shown = 0
    for seq in range(first, end + 1):
        row, before = by_seq.get(seq), by_seq.get(seq - 1)
        if row is None:
            proof.lines.append(f"  seq {seq}: MISSING")
            broken = True
            continue
        expected = record_hash(before.raw) if before is not None else None
        ok = (seq == 0 and row.chain_prev == "0" * 64) or row.chain_prev == expected
        broken |= not ok
        if all_links or not ok or shown < _SHOWN_LINKS:
            proof.lines.append(
                f"  seq {seq}: prev={row.chain_prev} hash={record_hash(row.raw)} "
                f"{'ok' if ok else 'BROKEN LINK'}"
            )
            shown += 1
    if shown < end - first + 1:
        proof.lines.append(f"  ... {end - first + 1 - shown} more links, all ok (--all-links)")
    return broken


def _show_checkpoint(
    cp: CheckpointRow, keyring: Keyring, segment: list[RequestRow | HopRow], proof: Proof
) -> None:
    hashes = {r.chain_seq: record_hash(r.raw) for r in segment if r.chain_seq is not None}
    problem = check_checkpoint(cp, keyring, hashes)
    proof.lines.append(
        f"  checkpoint seq={cp.seq} head={cp.head} at={cp.at.isoformat()} key_id={cp.key_id}"
    )
    proof.lines.append(f"  signature={cp.signature}")
    proof.lines.append(f"  checkpoint: {'VERIFIED' if problem is None else problem.detail}")
    if problem is not None:
        proof.proven = False
