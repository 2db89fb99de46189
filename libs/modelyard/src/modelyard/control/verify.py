"""Which control records a reader may apply: signed by a trusted key, within its role, consistent
with the state they claim to change, and deployable.

Every reader of the control topic (each router's follower, ``modelyard status``/``history``, a
writer reading its own record back) runs each record that the race rule of
:mod:`modelyard.control.chain` would apply through :meth:`ControlVerifier.verify`. A record that
fails is *rejected*: not applied (the pipeline's routing stays as it was), logged, counted and
shown as rejected by ``modelyard status``/``history``. The checks, in order (the first failure
is the reason):

1. ``unsigned`` / ``unknown_key`` / ``bad_signature``: the record carries a valid Ed25519
   signature (:mod:`modelyard.control.signing`) by a key of the keyring.
2. ``actor_mismatch``: its actor is that key's name (nobody writes as somebody else).
3. ``not_authorised``: the key's role allows the change. ``admin``: any change of any
   pipeline. ``operator``: any change of the pipelines its entry names. ``writer`` (a router or
   auditor): only a *guard retreat*, built on the state the reader holds: clearing a canary, or
   withdrawing a version (``withdraw``), of a stage whose guard rules an operator set; and the
   ``reassert`` a writer that lost a race writes (no change but seq). A writer key can never
   roll out, roll back, promote, set a canary, shadow or guards, or restore a release. A
   writer's record built on a state the reader never saw (compacted away) is judged by its
   anchor instead (:mod:`modelyard.control.anchor`): an operator's signed record, no older than
   the reader's, of which its state is a guard retreat.
4. ``inconsistent``: the record's state is exactly its change applied to the state it was built
   on (when the reader holds that state), and it is the state of the pipeline it is filed under:
   a signed "rollback" cannot smuggle in a different routing.
5. ``not_deployable`` / ``contract``: where the reader knows the pipeline's spec and model
   repository (a router), the versions the record routes to exist and satisfy the spec's tensor
   contract (:mod:`modelyard.control.deploy`). A release rollback is one record: one bad stage
   rejects all of it, so nothing is ever half-applied.

A verifier without a keyring (``ControlVerifier(None)``, a router started with
``--insecure-control``) skips 1-3 and still does 4-5.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

from modelyard.control.anchor import retreat_of
from modelyard.control.changes import (
    CanaryChange,
    Change,
    ControlError,
    Reassert,
    Withdraw,
    apply,
)
from modelyard.control.routing import PipelineRouting
from modelyard.control.signing import record_payload
from modelyard.control.state import ControlRecord
from modelyard.errors import ConfigError, ModelyardError, UnauthenticatedError
from modelyard.graph.contract import ContractError
from modelyard.keys import KeyEntry, Keyring

__all__ = [
    "REJECT_REASONS",
    "ControlVerifier",
    "DeployCheck",
    "RejectReason",
    "RejectedRecord",
    "guard_retreat",
]

RejectReason = Literal[
    "unsigned",
    "unknown_key",
    "bad_signature",
    "actor_mismatch",
    "not_authorised",
    "inconsistent",
    "not_deployable",
    "contract",
]
REJECT_REASONS: tuple[RejectReason, ...] = RejectReason.__args__  # type: ignore[attr-defined]

# check(head, record, built_on_head): raise ConfigError when the record's routing cannot be
# deployed (ContractError for the tensor contract); see modelyard.control.deploy.record_check
DeployCheck = Callable[[PipelineRouting, ControlRecord, bool], None]


class RejectedRecord(ModelyardError):
    """A control record no reader applies; ``reason`` is one of ``REJECT_REASONS``."""

    code = "rejected"

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ControlVerifier:
    """The keyring records must be signed against (None: signatures not checked) and, per
    pipeline, the deploy check of the routing a record asks for."""

    keyring: Keyring | None
    checks: Mapping[str, DeployCheck] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: Path, checks: Mapping[str, DeployCheck] | None = None) -> Self:
        """A verifier over the keyring at ``path``; ConfigError when there is none (a reader
        with an empty keyring would reject every change, which is never what was meant)."""
        keyring = Keyring.load(path)
        if not len(keyring):
            raise ConfigError(f"no keys in the keyring {path} (modelyard keys create, or up)")
        return cls(keyring, dict(checks or {}))

    @property
    def secure(self) -> bool:
        return self.keyring is not None

    def verify(
        self, head: PipelineRouting, record: ControlRecord, base: int | None, *, floor: int = 0
    ) -> None:
        """Raise :class:`RejectedRecord` unless a reader holding ``head`` may apply ``record``
        (``base``: the seq it names as built on, None when it names none; ``floor``: the seq of
        the newest authorised state the reader holds, which an anchor may not be older than:
        :mod:`modelyard.control.anchor`)."""
        built_on = base if base is not None else record.seq - 1
        if self.keyring is not None:
            entry = _signer(self.keyring, record)
            unseen_base = built_on > head.seq
            if not _anchored(self.keyring, entry, record, unseen_base=unseen_base, floor=floor):
                _authorise(entry, head, record, unseen_base=unseen_base)
        built_on_head = built_on == head.seq
        _consistent(head, record, built_on_head)
        check = self.checks.get(record.key)
        if check is not None:
            _deployable(check, head, record, built_on_head)


def guard_retreat(head: PipelineRouting, change: Change) -> bool:
    """Whether ``change`` only takes traffic away from a version, as a guard does: clearing a
    stage's canary or withdrawing a version, on a stage that has guard rules."""
    if not isinstance(change, CanaryChange | Withdraw):
        return False
    stage = head.stage(change.stage)
    if not stage.guards:
        return False
    return isinstance(change, Withdraw) or (change.version is None and stage.canary is not None)


def _signer(keyring: Keyring, record: ControlRecord) -> KeyEntry:
    if record.key_id is None or record.signature is None:
        raise RejectedRecord("unsigned", "the record is not signed")
    if keyring.get(record.key_id) is None:
        raise RejectedRecord("unknown_key", f"key {record.key_id!r} is not in the keyring")
    try:
        entry = keyring.verify(record.key_id, record_payload(record), record.signature)
    except UnauthenticatedError:
        raise RejectedRecord("bad_signature", f"bad signature for key {record.key_id!r}") from None
    if record.actor != entry.name:
        raise RejectedRecord(
            "actor_mismatch", f"actor {record.actor!r} but signed by key {entry.name!r}"
        )
    return entry


def _authorise(
    entry: KeyEntry, head: PipelineRouting, record: ControlRecord, *, unseen_base: bool
) -> None:
    if entry.may_change(record.key):
        return
    # a writer's record must be judged against the state it changes: one built on a state this
    # reader never saw would carry a routing nobody authorised
    change = record.change
    if (
        entry.role == "writer"
        and not unseen_base
        and (isinstance(change, Reassert) or guard_retreat(head, change))
    ):
        return
    allowed = {
        "admin": "every pipeline",
        "operator": f"pipelines {', '.join(entry.pipelines) or '(none)'}",
        "writer": "guard retreats only: clear a guarded canary, withdraw a version",
    }[entry.role]
    raise RejectedRecord(
        "not_authorised",
        f"key {entry.name!r} ({entry.role}: {allowed}) may not change pipeline {record.key!r} "
        f"this way",
    )


def _anchored(
    keyring: Keyring, entry: KeyEntry, record: ControlRecord, *, unseen_base: bool, floor: int
) -> bool:
    """Whether a writer's ``record``, built on a state this reader never saw (compacted away),
    is authorised by its anchor; RejectedRecord when its anchor does not hold."""
    if not unseen_base or entry.role != "writer" or record.anchor is None:
        return False
    anchor = record.anchor
    try:
        signer = _signer(keyring, anchor)
    except RejectedRecord as exc:
        raise _unanchored(record, f"its anchor is not trusted: {exc.message}") from None
    if not signer.may_change(record.key) or anchor.key != record.key:
        raise _unanchored(record, f"its anchor (seq {anchor.seq}) is not by a key that may "
                          f"change pipeline {record.key!r}")  # fmt: skip
    if not floor <= anchor.seq < record.seq:
        raise _unanchored(record, f"its anchor (seq {anchor.seq}) is older than the state this "
                          f"reader holds (seq {floor}) or not older than the record")  # fmt: skip
    if not retreat_of(anchor.state, record.state):
        raise _unanchored(record, f"its state is not its anchor's (seq {anchor.seq}) with "
                          "guard retreats only")  # fmt: skip
    return True


def _unanchored(record: ControlRecord, why: str) -> RejectedRecord:
    return RejectedRecord(
        "not_authorised",
        f"writer {record.actor!r}'s record (seq {record.seq}) is built on a state this reader "
        f"never saw, and {why}",
    )


def _consistent(head: PipelineRouting, record: ControlRecord, built_on_head: bool) -> None:
    if record.state.pipeline != record.key:
        raise RejectedRecord(
            "inconsistent",
            f"state of pipeline {record.state.pipeline!r} filed under {record.key!r}",
        )
    if not built_on_head:
        return  # built on a state this reader never saw (compaction): the record is the truth
    try:
        expected = apply(head, record.change)
    except ControlError as exc:
        raise RejectedRecord("inconsistent", f"the change does not apply: {exc.message}") from None
    if expected != record.state:
        raise RejectedRecord("inconsistent", "the state is not the change applied to seq "
                             f"{head.seq}")  # fmt: skip


def _deployable(
    check: DeployCheck, head: PipelineRouting, record: ControlRecord, built_on_head: bool
) -> None:
    try:
        check(head, record, built_on_head)
    except ContractError as exc:
        raise RejectedRecord("contract", exc.message) from None
    except ConfigError as exc:
        raise RejectedRecord("not_deployable", exc.message) from None
