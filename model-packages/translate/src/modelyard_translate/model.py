"""The translate stage: any supported language to English with resident Apertium chains.

Each element of ``text`` is translated from the language in the same element of ``language``
(an ISO 639-1 code from language ID; a region suffix such as ``pt-BR`` is ignored) along the
route the manifest names: one pair (``es``, ``ca``) or a pivot through Spanish (``fr``, ``pt``,
``it``: two resident chains in a row). English passes through untouched. A language with no
route gets an empty translation and the status ``unsupported``: never a silent copy, never an
error. Every pair any route needs is started at ``load``, so a missing Debian package stops the
service at start (ConfigError naming it) instead of failing requests later.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from modelyard.errors import ConfigError, ModelyardError, ValidationError
from modelyard.model import Inputs, Model, Outcome
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from modelyard_translate.apertium import ApertiumPair

__all__ = ["Route", "TranslateParameters", "Translator"]


class Route(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pairs: tuple[str, ...] = Field(min_length=1, description="Apertium modes applied in order.")
    label: str = Field(description="Route as reported in the 'route' output, e.g. 'fr>es>en'.")


class TranslateParameters(BaseModel):
    """``parameters`` of a translate manifest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    routes: dict[str, Route] = Field(description="Source language code -> route to English.")
    passthrough: tuple[str, ...] = Field(default=("en",), description="Already English.")
    packages: dict[str, str] = Field(description="Apertium mode -> Debian package providing it.")
    modes_dir: str = Field(default="/usr/share/apertium/modes", description="Installed modes.")
    mode_files: dict[str, str] = Field(
        default_factory=dict, description="Mode -> pinned copy, relative to the version dir."
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Longest wait for one sentence.")


class Translator(Model):
    """Outputs per element: ``translation``, ``status`` and ``route`` (all BYTES)."""

    def load(self) -> None:
        try:
            self.params = TranslateParameters.model_validate(self.manifest.parameters)
        except PydanticValidationError as exc:
            raise ConfigError(f"{self.manifest.ref}: invalid parameters: {exc}") from exc
        self.pairs: dict[str, ApertiumPair] = {}
        try:
            for mode in sorted({m for r in self.params.routes.values() for m in r.pairs}):
                self.pairs[mode] = self._start_pair(mode)
        except ModelyardError:
            self.unload()
            raise

    def _start_pair(self, mode: str) -> ApertiumPair:
        package = self.params.packages.get(mode, f"the package providing {mode}")
        installed = Path(self.params.modes_dir) / f"{mode}.mode"
        pinned = self.params.mode_files.get(mode)
        if not installed.exists():
            raise ConfigError(f"Apertium mode {mode} not installed: apt-get install {package}")
        pair = ApertiumPair(
            mode, self.path / pinned if pinned else installed, self.params.timeout_s
        )
        missing = [str(f) for f in pair.data_files if not f.exists()]
        if missing:
            raise ConfigError(f"Apertium {mode} lacks {missing}: apt-get install {package}")
        pair.start()
        return pair

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        return [self._item(inputs) for inputs in batch]

    def _item(self, inputs: Inputs) -> Outcome:
        texts = inputs["text"].reshape(-1).tolist()
        languages = inputs["language"].reshape(-1).tolist()
        if len(texts) != len(languages):
            return ValidationError(f"{len(texts)} texts but {len(languages)} languages")
        try:
            rows = [
                self._one(bytes(t), bytes(lang)) for t, lang in zip(texts, languages, strict=True)
            ]
        except ModelyardError as exc:
            return exc  # this request fails; the others in the batch are answered
        columns = list(zip(*rows, strict=True)) or [(), (), ()]
        return {name: _bytes_array(col) for name, col in zip(_OUTPUTS, columns, strict=True)}

    def _one(self, text: bytes, language: bytes) -> tuple[bytes, bytes, bytes]:
        code = language.decode(errors="replace").strip().lower().replace("_", "-").split("-")[0]
        if code in self.params.passthrough:
            return text, b"passthrough", code.encode()
        route = self.params.routes.get(code)
        if route is None:
            return b"", b"unsupported", b""
        try:
            translated = text.decode()
        except UnicodeDecodeError:
            raise ValidationError("text is not valid UTF-8") from None
        for mode in route.pairs:
            translated = self.pairs[mode].translate(translated)
        return translated.encode(), b"translated", route.label.encode()

    def unload(self) -> None:
        for pair in getattr(self, "pairs", {}).values():
            pair.close()

    def ready(self) -> bool:
        return all(p.engine.ready() for p in self.pairs.values())


_OUTPUTS = ("translation", "status", "route")


def _bytes_array(values: Sequence[bytes]) -> np.ndarray[Any, Any]:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out
