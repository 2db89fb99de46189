"""The pipeline, stage manifest and records every entry point is fuzzed against."""

from __future__ import annotations

from typing import Any

from modelyard.graph.load import parse_spec
from modelyard.graph.spec import PipelineSpec
from modelyard.repository.manifest import Manifest

__all__ = [
    "CONTROL_SAMPLE",
    "FIELD_NAMES",
    "HOP_SAMPLE",
    "MANIFEST",
    "REQUEST_SAMPLE",
    "SPEC",
    "SPEC_TEXT",
    "STAGE_NAMES",
]

FIELD_NAMES = ["text", "scores", "ids", "small", "half", "flag", "y", "z"]
STAGE_NAMES = ["a", "b", "c"]
SPEC_TEXT = """\
pipeline: fz
version: 3
description: every datatype the wire carries, a branch, a join and a fallback
inputs:
  text: {datatype: BYTES, shape: [-1]}
  scores: {datatype: FP32, shape: [-1, 3], optional: true}
  ids: {datatype: INT64, shape: [2], optional: true}
  small: {datatype: UINT8, shape: [-1], optional: true}
  half: {datatype: FP16, shape: [2, -1], optional: true}
  flag: {datatype: BOOL, shape: [1], optional: true}
stages:
  a:
    model: ma
    inputs: {x: request.text}
  b:
    model: mb
    inputs: {x: a.y}
    when: "a.y != 'skip' and len(request.text) < 100"
  c:
    model: mc
    inputs: {t: [b.z, a.y], x: request.text}
    when: "request.caller != 'nobody' or a.y == b.z"
outputs:
  y: a.y
  z: [b.z, a.y]
  w: c.w
"""
SPEC: PipelineSpec = parse_spec(SPEC_TEXT, "fuzz.yaml")
MANIFEST = Manifest.model_validate(
    {
        "name": "fz",
        "version": "1",
        "runtime": "python",
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [-1]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, 3], "optional": True},
            {"name": "ids", "datatype": "INT64", "shape": [2], "optional": True},
            {"name": "small", "datatype": "UINT8", "shape": [-1], "optional": True},
            {"name": "half", "datatype": "FP16", "shape": [2, -1], "optional": True},
            {"name": "flag", "datatype": "BOOL", "shape": [1], "optional": True},
        ],
        "outputs": [{"name": "out_text", "datatype": "BYTES", "shape": [-1]}],
        "limits": {"max_request_bytes": 256 * 1024, "max_text_chars": 64},
    }
)
CONTROL_SAMPLE: dict[str, Any] = {
    "schema": 1, "key": "fz", "seq": 4, "actor": "alice", "at": "2025-01-02T03:04:05Z",
    "reason": "canary", "change": {"type": "canary", "stage": "a", "version": "2", "weight": 0.25},
    "state": {
        "pipeline": "fz", "seq": 4,
        "stages": {
            "a": {"active": "1", "previous": ["0"], "canary": {"version": "2", "weight": 0.25},
                  "shadow": {"version": "3", "sample_rate": 0.5},
                  "guards": [{"metric": "error_rate", "max": 0.1, "window_s": 60.0,
                              "min_requests": 50}]},
            "b": {"active": "1"},
        },
        "releases": {"r1": {"name": "r1", "stages": {"a": "0", "b": "1"}}},
    },
}  # fmt: skip
HOP_SAMPLE: dict[str, Any] = {
    "schema": 1, "kind": "hop", "request_id": "req-1", "pipeline": "fz", "caller": "alice",
    "trace_id": "0af7651916cd43dd8448eb211c80319c", "outcome": "ok", "error": None,
    "stage": "a", "model": "ma", "version": "1", "role": "active", "shadow": False, "attempt": 0,
    "span_id": "b7ad6b7169203331", "dispatched_at": "2025-01-02T03:04:05.100Z",
    "finished_at": "2025-01-02T03:04:05.150Z", "latency_ms": 50.0, "input_digest": "ab" * 32,
    "output_digest": "cd" * 32, "agrees": None,
}  # fmt: skip
REQUEST_SAMPLE: dict[str, Any] = {
    "schema": 1, "kind": "request", "request_id": "req-1", "pipeline": "fz", "caller": "alice",
    "trace_id": None, "outcome": "ok", "error": None, "spec_version": 3,
    "received_at": "2025-01-02T03:04:05Z", "finished_at": "2025-01-02T03:04:06Z",
    "latency_ms": 1000.0, "served_by": {"a": "ma:1"}, "skipped": ["b"], "input_digest": "ef" * 32,
}  # fmt: skip
