"""Coverage-guided byte fuzzing of every entry point with atheris (libFuzzer).

``python -m tests.fuzz.atheris_targets ENTRY_POINT [libFuzzer flags] [corpus folders]`` fuzzes
one harness of ``tests.fuzz.targets.ENTRY_POINTS``. modelyard is instrumented for coverage
(PyYAML too would make the spec loader ten times slower); any exception that escapes the
harness is a crash; libFuzzer's ``-timeout`` and ``-rss_limit_mb`` catch hangs and unbounded
memory. ``scripts/fuzz.py`` runs every entry point for a time budget and files what it finds
under ``tests/fuzz/corpus/``. ``python -m tests.fuzz.atheris_targets --seeds ENTRY_POINT
FOLDER`` writes starting inputs.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import atheris
import structlog

with atheris.instrument_imports(include=["modelyard"]):
    import numpy as np
    from modelyard.api.oip.v2 import grpc_service_pb2 as oip
    from modelyard.api.pipeline.v1 import pipeline_pb2 as ppb
    from modelyard.wire import Envelope, encode_envelope

    from tests.fuzz.framing import Message, frame_message
    from tests.fuzz.samples import CONTROL_SAMPLE, HOP_SAMPLE, REQUEST_SAMPLE, SPEC_TEXT
    from tests.fuzz.targets import ENTRY_POINTS

__all__ = ["main", "seeds"]


def seeds(entry_point: str) -> list[bytes]:
    """Valid inputs of ``entry_point`` to start from (libFuzzer mutates toward the rest)."""
    request = encode_envelope(
        Envelope("req-1", {"text": ["hola"], "scores": np.ones((1, 3), np.float32)}, caller="a")
    )
    oip_json = json.dumps(
        {
            "id": "j-1",
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hola"]},
                {"name": "scores", "datatype": "FP32", "shape": [1, 3], "data": [[1, 2, 3]]},
            ],
        }
    ).encode()
    reply = encode_envelope(Envelope("req-1", {"y": ["en"]}, "fz", "a", model="ma", version="1"))
    infer = oip.ModelInferRequest(model_name="fz", id="g-1")
    infer.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"x")
    raw = oip.ModelInferRequest(model_name="fz", raw_input_contents=[b"\0" * 12])
    raw.inputs.add(name="scores", datatype="FP32", shape=[1, 3])
    pipeline = ppb.InferRequest(
        pipeline="fz",
        inputs=[ppb.Tensor(name="text", datatype="BYTES", shape=[1], bytes_contents=[b"x"])],
    )
    messages = [
        Message(b"req-1", request, [("reply-to", b"replies")]),
        Message(b"k", oip_json, [("content-type", b"application/json"), ("reply-to", b"r")]),
    ]
    by_entry_point = {
        "router_ingress": [frame_message(m) for m in messages],
        "stage_intake": [frame_message(m) for m in messages],
        "router_reply": [frame_message(Message(b"req-1", reply, [("attempt", b"0")]))],
        "grpc_model_infer": [infer.SerializeToString(), raw.SerializeToString()],
        "gateway_infer": [pipeline.SerializeToString()],
        "pipeline_spec": [SPEC_TEXT.encode()],
        "control_record": [json.dumps(CONTROL_SAMPLE).encode()],
        "audit_record": [json.dumps(HOP_SAMPLE).encode(), json.dumps(REQUEST_SAMPLE).encode()],
    }
    return by_entry_point[entry_point]


def _quiet() -> None:
    """No log lines per case: the servicers log every call, and libFuzzer's stats go to stderr."""
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


def main(argv: list[str]) -> None:
    if argv[1:2] == ["--seeds"]:
        folder = Path(argv[3])
        folder.mkdir(parents=True, exist_ok=True)
        for index, data in enumerate(seeds(argv[2])):
            (folder / f"seed-{index}").write_bytes(data)
        return
    harness = ENTRY_POINTS[argv[1]]
    _quiet()
    atheris.Setup([argv[0], *argv[2:]], harness)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
