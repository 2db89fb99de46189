"""The control plane's pure core: routing state, changes, records, canary and shadow draws.

No I/O here: the control topic consumer feeds records to :class:`ControlState`, and the CLI
builds records with :func:`make_record`.
"""

from modelyard.control.canary import Role, choose_version, should_shadow, unit_hash
from modelyard.control.changes import (
    CanaryChange,
    Change,
    ControlError,
    GuardsChange,
    Promote,
    Reassert,
    ReleaseRollback,
    ReleaseSave,
    Rollback,
    Rollout,
    ShadowChange,
    Withdraw,
    apply,
)
from modelyard.control.routing import (
    Canary,
    GuardRule,
    PipelineRouting,
    Release,
    Shadow,
    StageRouting,
)
from modelyard.control.state import (
    ControlRecord,
    ControlState,
    decode_record,
    encode_record,
    make_record,
)

__all__ = [
    "Canary",
    "CanaryChange",
    "Change",
    "ControlError",
    "ControlRecord",
    "ControlState",
    "GuardRule",
    "GuardsChange",
    "PipelineRouting",
    "Promote",
    "Reassert",
    "Release",
    "ReleaseRollback",
    "ReleaseSave",
    "Role",
    "Rollback",
    "Rollout",
    "Shadow",
    "ShadowChange",
    "StageRouting",
    "Withdraw",
    "apply",
    "choose_version",
    "decode_record",
    "encode_record",
    "make_record",
    "should_shadow",
    "unit_hash",
]
