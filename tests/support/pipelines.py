"""Pipeline specs the end-to-end tests share, over the reference models."""

from __future__ import annotations

__all__ = ["TEXT_SPEC"]

# The reference pipeline without OCR: language ID, translation when not English, sentiment when
# the text is English or was translated (German is not: no sentiment).
TEXT_SPEC = """\
pipeline: text
version: 1
inputs:
  text: {datatype: BYTES, shape: [1]}
stages:
  langid:
    model: langid
    inputs: {text: request.text}
  translate:
    model: translate
    inputs: {text: request.text, language: langid.language}
    when: "langid.language != 'en'"
  sentiment:
    model: sentiment
    inputs: {text: [translate.translation, request.text]}
    when: "langid.language == 'en' or translate.status == 'translated'"
outputs:
  language: langid.language
  translation: translate.translation
  sentiment: sentiment.label
"""
