"""A plain onnxruntime session with the settings every modelyard service needs.

Temporary local helper: switch to ``modelyard.runtimes.onnx.OnnxSession`` once it lands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort

__all__ = ["session"]


def session(model: Path | bytes, threads: int = 1) -> Any:
    """An ``InferenceSession`` that does not spin idle threads (they steal cores from numpy)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # Ask for CUDA only where it is really there, so CPU hosts log no false errors.
    providers = [p for p in ("CUDAExecutionProvider",) if p in ort.get_available_providers()]
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=[*providers, "CPUExecutionProvider"])
