"""The OCR stage's model adapter: encoded image in, text in reading order out.

Input ``image``: BYTES [1], one encoded PNG or JPEG. Outputs ``text`` (lines joined with "\\n"),
``confidence`` (mean line score, 0 when no text) and ``lines`` (line count). Versions whose
manifest names a text-line classifier (``parameters.cls``, ``ocr:3``) read whole pages: turned
upright and level first, blocks separated by a blank line in ``text``, plus the outputs ``angle``
(degrees counter-clockwise applied) and ``blocks``. An input that is not an image or exceeds the
version's limits fails only its own request of the batch.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from modelyard.errors import ConfigError, PayloadTooLargeError, ValidationError
from modelyard.model import Inputs, Model, Outcome
from modelyard.runtimes.onnx import OnnxSession
from PIL import Image, UnidentifiedImageError

from modelyard_ocr.detect import DetParams
from modelyard_ocr.orient import OrientParams
from modelyard_ocr.page import PageReader, PageText
from modelyard_ocr.ppocr import PpOcr, RecParams
from modelyard_ocr.recognize import Line, charset_from_text

__all__ = ["ACCEPTED_FORMATS", "OcrModel", "decode_image"]

ACCEPTED_FORMATS = ("PNG", "JPEG")


class OcrModel(Model):
    """PP-OCR det+rec; file names and pre/post settings come from the manifest's parameters."""

    def load(self) -> None:
        p = self.manifest.parameters
        threads = int(p.get("threads", 1))
        det = OnnxSession(self.path / p["det"], intra_op_threads=threads)
        rec = OnnxSession(self.path / p["rec"], intra_op_threads=threads)
        charset = self._charset(rec)
        classes = rec.output_specs()[0].shape[-1]
        if classes != -1 and classes != len(charset):
            raise ConfigError(f"{self.manifest.ref}: {len(charset)} chars for {classes} classes")
        rec_params = RecParams(**p.get("rec_params", {}))
        self._ocr = PpOcr(det, rec, charset, _det_params(p), rec_params)
        self._pages: PageReader | None = None
        if p.get("cls"):
            cls = OnnxSession(self.path / p["cls"], intra_op_threads=threads)
            orient = OrientParams(**p.get("orient_params", {}))
            self._pages = PageReader(self._ocr, cls, rec_params.min_score, orient)

    def _charset(self, rec: OnnxSession) -> list[str]:
        """From the dict file when the manifest names one, else from the rec model's metadata."""
        p = self.manifest.parameters
        if p.get("dict"):
            return charset_from_text((self.path / p["dict"]).read_text(encoding="utf-8"))
        key = p.get("dict_metadata_key", "character")
        return charset_from_text(rec.metadata[key])

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        decoded: list[np.ndarray[Any, Any] | ValidationError] = []
        for inputs in batch:
            try:
                decoded.append(self._decode(inputs))
            except ValidationError as exc:
                decoded.append(exc)
        images = [d for d in decoded if not isinstance(d, ValidationError)]
        results = iter(self._read(images))
        return [d if isinstance(d, ValidationError) else next(results) for d in decoded]

    def _read(self, images: list[np.ndarray[Any, Any]]) -> list[dict[str, np.ndarray[Any, Any]]]:
        if self._pages is None:  # ocr:1 and ocr:2: lines only, exactly as published
            return [_outputs(lines) for lines in self._ocr.read(images)]
        return [_page_outputs(page) for page in self._pages.read(images)]

    def _decode(self, inputs: Inputs) -> np.ndarray[Any, Any]:
        values = inputs["image"].reshape(-1).tolist()
        if len(values) != 1 or not isinstance(values[0], bytes | bytearray | memoryview):
            raise ValidationError("input 'image' must hold exactly one encoded image (BYTES [1])")
        limits = self.manifest.limits
        return decode_image(bytes(values[0]), limits.max_request_bytes, limits.max_image_pixels)


def _det_params(parameters: dict[str, Any]) -> DetParams:
    raw = dict(parameters.get("det_params", {}))
    for key in ("mean", "std"):  # YAML gives lists; the frozen dataclass holds tuples
        if key in raw:
            raw[key] = tuple(raw[key])
    return DetParams(**raw)


def decode_image(data: bytes, max_bytes: int, max_pixels: int | None) -> np.ndarray[Any, Any]:
    """Encoded PNG/JPEG -> BGR uint8 array; limits are checked on the header before decoding."""
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"image is {len(data)} bytes; the limit is {max_bytes}")
    fmt, (width, height) = _header(data)
    if max_pixels is not None and width * height > max_pixels:
        raise PayloadTooLargeError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    # PNG may carry alpha (kept, then flattened on white); JPEG honours its EXIF orientation
    flag = cv2.IMREAD_UNCHANGED if fmt == "PNG" else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise ValidationError("not an image: the PNG/JPEG data is corrupt or truncated")
    return _to_bgr(image)


def _header(data: bytes) -> tuple[str, tuple[int, int]]:
    """Format and (width, height) from the image header, without decoding pixels (bomb-safe)."""
    with warnings.catch_warnings():
        # our own pixel limit decides; Pillow's bomb warning would only add noise
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                return str(image.format), image.size
        except Image.DecompressionBombError as exc:
            raise PayloadTooLargeError(f"image has too many pixels: {exc}") from None
        except (UnidentifiedImageError, OSError, ValueError):
            head = data[:8].hex(" ")
            raise ValidationError(f"not an image: expected PNG or JPEG, got bytes {head}") from None


def _to_bgr(image: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Any decoded layout as 8-bit BGR; transparent areas become white paper, not black."""
    if image.dtype != np.uint8:
        image = (image / 257).astype(np.uint8)  # 16-bit PNG
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if image.shape[2] == 4:
        alpha = image[:, :, 3:].astype(np.float32) / 255.0
        blended: np.ndarray[Any, Any] = image[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
        return blended.astype(np.uint8)
    return image


def _outputs(lines: list[Line], joined: str | None = None) -> dict[str, np.ndarray[Any, Any]]:
    text = np.empty(1, dtype=object)
    text[0] = ("\n".join(line.text for line in lines) if joined is None else joined).encode()
    confidence = float(np.mean([line.score for line in lines])) if lines else 0.0
    return {
        "text": text,
        "confidence": np.array([confidence], np.float32),
        "lines": np.array([len(lines)], np.int32),
    }


def _page_outputs(page: PageText) -> dict[str, np.ndarray[Any, Any]]:
    return {
        **_outputs(page.lines, page.text),
        "angle": np.array([page.angle], np.float32),
        "blocks": np.array([len(page.blocks)], np.int32),
    }
