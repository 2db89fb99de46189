"""Rendered test pages with layout: multi-column, rotated and skewed, each with its truth text.

Beside the one-paragraph pages of ``samples.render``: these exercise reading order (a heading
spanning the columns, a picture with its caption, text flowing column after column) and page
orientation (quarter turns, small skews). Rendering is deterministic: no randomness at all.
The truth is the text in reading order, blocks separated by a blank line; CER normalises
whitespace, so only the order of the words counts.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from modelyard_ocr.corpus import CORPUS
from modelyard_ocr.samples import FONT_DIR

__all__ = ["PAGE_SETS", "Page", "column_page", "page_set", "rotated_page", "skewed_page"]

_BODY = 26
_HEADING = 38
_CAPTION = 22
_MARGIN = 50
_GUTTER = 60  # about two text heights: a real newspaper gutter, wide enough to see
_COLUMN_PX = 340
_SINGLE_PX = 760
_PICTURE_H = 180
_PITCH = round(_BODY * 1.45)
_HEADING_SENTENCE = 5  # the shortest sentences make the heading and the caption
_CAPTION_SENTENCE = 1


@dataclass(frozen=True, slots=True)
class Page:
    """One rendered page: PNG bytes, its truth in reading order and the set's expectations."""

    name: str
    language: str
    png: bytes
    truth: str
    turn: int = 0  # quarter turns (counter-clockwise) the page was rendered with
    skew: float = 0.0  # degrees counter-clockwise the page was rotated by


# set -> (layout, language per page); a few pages each keep the test suite short
PAGE_SETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "columns-2": ("columns-2", ("en", "fr")),
    "columns-3": ("columns-3", ("es", "de")),
    "columns-4": ("columns-4", ("it", "pt")),
    "rotated-90": ("rotated-1", ("en", "ca")),
    "rotated-180": ("rotated-2", ("es", "it")),
    "rotated-270": ("rotated-3", ("fr", "de")),
    "skewed": ("skewed", ("pt", "en", "ca", "es")),
}
_SKEWS = (3.0, -4.0, 5.0, -5.0)  # degrees, one per page of the skewed set, in turn


def page_set(name: str) -> list[Page]:
    """The pages of one set of ``PAGE_SETS``."""
    layout, languages = PAGE_SETS[name]
    kind, _, arg = layout.partition("-")
    pages = []
    for k, lang in enumerate(languages):
        if kind == "columns":
            pages.append(column_page(lang, int(arg)))
        elif kind == "rotated":
            pages.append(rotated_page(lang, int(arg)))
        else:
            pages.append(skewed_page(lang, _SKEWS[k % len(_SKEWS)]))
    return pages


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / name), size)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and font.getlength(candidate) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def _paragraphs(lang: str, skip: tuple[int, ...] = ()) -> list[str]:
    """The language's sentences, two to a paragraph."""
    sentences = [s for k, s in enumerate(CORPUS[lang]) if k not in skip]
    return [" ".join(sentences[k : k + 2]) for k in range(0, len(sentences), 2)]


def _body_lines(paragraphs: list[str], width: int) -> list[str]:
    """Wrapped lines; an empty string marks the blank line between paragraphs."""
    font = _font("DejaVuSerif.ttf", _BODY)
    lines: list[str] = []
    for paragraph in paragraphs:
        lines += [*([""] if lines else []), *_wrap(paragraph, font, width)]
    return lines


def _truth(blocks: list[list[str]]) -> str:
    return "\n\n".join("\n".join(block) for block in blocks if block)


def _png(page: Image.Image) -> bytes:
    buf = io.BytesIO()
    page.save(buf, format="PNG")
    return buf.getvalue()


def column_page(lang: str, columns: int) -> Page:
    """Heading across all columns, a picture and its caption atop column 1, text flowing on."""
    heading_font = _font("DejaVuSans-Bold.ttf", _HEADING)
    width = 2 * _MARGIN + columns * _COLUMN_PX + (columns - 1) * _GUTTER
    heading = _wrap(CORPUS[lang][_HEADING_SENTENCE], heading_font, width - 2 * _MARGIN)
    caption = _wrap(
        CORPUS[lang][_CAPTION_SENTENCE], _font("DejaVuSans-Oblique.ttf", _CAPTION), _COLUMN_PX
    )
    body = _body_lines(_paragraphs(lang, (_HEADING_SENTENCE, _CAPTION_SENTENCE)), _COLUMN_PX)
    top = _MARGIN + len(heading) * round(_HEADING * 1.3) + _PITCH
    figure = _PICTURE_H + len(caption) * round(_CAPTION * 1.4) + _PITCH
    column_lines = _balance(body, columns, figure // _PITCH + 1)
    height = (
        top
        + max(len(c) + (k == 0) * (figure // _PITCH + 1) for k, c in enumerate(column_lines))
        * _PITCH
        + _MARGIN
    )
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    for k, line in enumerate(heading):
        draw.text((_MARGIN, _MARGIN + k * round(_HEADING * 1.3)), line, fill=0, font=heading_font)
    _picture(draw, (_MARGIN, top, _MARGIN + _COLUMN_PX, top + _PICTURE_H))
    for k, line in enumerate(caption):
        y = top + _PICTURE_H + 8 + k * round(_CAPTION * 1.4)
        draw.text((_MARGIN, y), line, fill=0, font=_font("DejaVuSans-Oblique.ttf", _CAPTION))
    blocks = [heading, caption]
    for c, lines in enumerate(column_lines):
        x = _MARGIN + c * (_COLUMN_PX + _GUTTER)
        y0 = top + (figure // _PITCH + 1) * _PITCH * (c == 0)
        for k, line in enumerate(lines):
            draw.text((x, y0 + k * _PITCH), line, fill=0, font=_font("DejaVuSerif.ttf", _BODY))
        blocks += _split_blank(lines)
    return Page(f"{lang}-columns-{columns}", lang, _png(page), _truth(blocks))


def _balance(lines: list[str], columns: int, first_offset: int) -> list[list[str]]:
    """Lines filled column by column to the shortest height that holds them all."""
    for height in range(1, len(lines) + first_offset + 1):
        out: list[list[str]] = [[] for _ in range(columns)]
        rest = list(lines)
        for c in range(columns):
            room = height - first_offset * (c == 0)
            while rest and len(out[c]) < room:
                line = rest.pop(0)
                if line or out[c]:  # no blank line at the top of a column
                    out[c].append(line)
        if not rest:
            return out
    raise AssertionError("unreachable: the last height holds every line")


def _split_blank(lines: list[str]) -> list[list[str]]:
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line:
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


def _picture(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    """A line-art "photo": framed sky, sun and hills (no glyph-like strokes)."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=205, outline=90, width=3)
    draw.ellipse((x1 - 90, y0 + 20, x1 - 40, y0 + 70), fill=245)
    draw.polygon([(x0, y1), (x0 + 120, y0 + 80), (x0 + 230, y1)], fill=120)
    draw.polygon([(x0 + 150, y1), (x0 + 260, y0 + 100), (x1, y1)], fill=150)


def _single_column(lang: str) -> tuple[Image.Image, str]:
    lines = _body_lines(_paragraphs(lang)[:3], _SINGLE_PX)
    page = Image.new("L", (2 * _MARGIN + _SINGLE_PX, 2 * _MARGIN + len(lines) * _PITCH), 255)
    draw = ImageDraw.Draw(page)
    for k, line in enumerate(lines):
        draw.text(
            (_MARGIN, _MARGIN + k * _PITCH), line, fill=0, font=_font("DejaVuSerif.ttf", _BODY)
        )
    return page, _truth(_split_blank(lines))


def rotated_page(lang: str, turns: int) -> Page:
    """A single-column page turned by ``turns`` quarter turns counter-clockwise (lossless)."""
    page, truth = _single_column(lang)
    turned = page.rotate(90 * turns, expand=True)  # exact for multiples of 90
    return Page(f"{lang}-rotated-{90 * turns}", lang, _png(turned), truth, turn=turns)


def skewed_page(lang: str, degrees: float) -> Page:
    """A single-column page rotated by ``degrees`` counter-clockwise, as a tilted scan."""
    page, truth = _single_column(lang)
    tilted = page.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    return Page(f"{lang}-skewed-{degrees:+.0f}", lang, _png(tilted), truth, skew=degrees)
