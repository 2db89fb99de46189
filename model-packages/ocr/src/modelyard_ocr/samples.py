"""Rendered sample documents: clean PNGs and seeded "scan-like" JPEGs of the corpus.

Used by the OCR tests (CER), the demo and other stages' end-to-end tests. Rendering is
deterministic for a given Pillow build: fonts, layout and every random draw come from the seed.
Fonts are DejaVu from Debian's ``fonts-dejavu-core``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from modelyard_ocr.corpus import CORPUS

__all__ = ["FONT_DIR", "render", "write_samples"]

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
_FONT_SIZE = 30
_WRAP_PX = 720  # text block width: most corpus sentences become two or three lines
_MARGIN = 40
_PAPER = np.array([236.0, 228.0, 196.0])  # yellowish paper, RGB


def render(text: str, *, noisy: bool = False, seed: int = 0, font: str = "DejaVuSans.ttf") -> bytes:
    """``text`` word-wrapped on a page: PNG when clean, degraded JPEG (q45) when ``noisy``."""
    page = _typeset(text, ImageFont.truetype(str(FONT_DIR / font), _FONT_SIZE))
    if not noisy:
        return _encode(page, "PNG")
    return _encode(_degrade(page, np.random.default_rng(seed)), "JPEG", quality=45)


def _typeset(text: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    lines = [line for para in text.split("\n") for line in _wrap(para, font)]
    step = round(_FONT_SIZE * 1.5)
    width = _MARGIN * 2 + max(round(font.getlength(line)) for line in lines)
    page = Image.new("L", (width, _MARGIN * 2 + step * len(lines)), 255)
    draw = ImageDraw.Draw(page)
    for k, line in enumerate(lines):
        draw.text((_MARGIN, _MARGIN + k * step), line, fill=0, font=font)
    return page


def _wrap(paragraph: str, font: ImageFont.FreeTypeFont) -> list[str]:
    lines: list[str] = []
    for word in paragraph.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and font.getlength(candidate) <= _WRAP_PX:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines or [""]


def _degrade(page: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Skew ±1.5°, 0.6x down/up-scale, blur, paper tint, lighting gradient, noise, speckles."""
    angle = float(rng.uniform(-1.5, 1.5))
    page = page.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    small = page.resize((round(page.width * 0.6), round(page.height * 0.6)), Image.Resampling.BOX)
    page = small.resize(page.size, Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(0.6))
    ink = np.asarray(page, np.float64)[..., None] / 255.0
    light = np.linspace(1.0, 0.85, page.width)[None, :, None]  # one side of the page darker
    rgb = ink * _PAPER * light + rng.normal(0.0, 18.0, (page.height, page.width, 1))
    speckles = rng.random((page.height, page.width)) < 0.0015
    rgb[speckles] = rng.uniform(40, 120, (int(speckles.sum()), 1))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def _encode(image: Image.Image, fmt: str, **options: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def write_samples(directory: Path, languages: tuple[str, ...] = tuple(CORPUS)) -> list[Path]:
    """Write a clean PNG and a scan-like JPEG per corpus sentence, plus ``index.json`` (truth)."""
    directory.mkdir(parents=True, exist_ok=True)
    index: dict[str, dict[str, str]] = {}
    for lang in languages:
        for k, sentence in enumerate(CORPUS[lang]):
            for noisy, suffix in ((False, ".png"), (True, "-scan.jpg")):
                name = f"{lang}-{k:02d}{suffix}"
                (directory / name).write_bytes(render(sentence, noisy=noisy, seed=k))
                index[name] = {"language": lang, "text": sentence}
    (directory / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n")
    return sorted(directory / name for name in index)
