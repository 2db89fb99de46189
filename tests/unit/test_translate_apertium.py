"""Apertium plumbing and the Translator's routing, with a fake engine (no Apertium needed)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modelyard.errors import ConfigError, ValidationError
from modelyard.repository.manifest import Manifest
from modelyard_translate.apertium import escape, mode_stages, unescape
from modelyard_translate.model import Translator

# Stands in for every Apertium module: NUL-framed, answers "<its last arg>|" + upper-cased text.
FAKE = textwrap.dedent(
    f"""\
    #!{sys.executable}
    import os, sys
    buf = b""
    while chunk := os.read(0, 65536):
        buf += chunk
        while b"\\0" in buf:
            frame, buf = buf.split(b"\\0", 1)
            os.write(1, sys.argv[-1].encode() + b"|" + frame.upper() + b"\\0")
    """
)


def test_escape_and_unescape_round_trip() -> None:
    text = "a^b$c@d/e<f>g[h]i{j}k\\l*m ~n\nsecond line"
    stream = escape(text)
    assert stream.endswith("[]")
    assert "\\$" in stream
    assert "[\n]" in stream
    assert unescape(stream) == text
    with pytest.raises(ValidationError):
        escape("nul\0inside")


def test_mode_stages_adds_null_flush_and_sets_placeholders() -> None:
    mode = "lt-proc 'a b.bin' | apertium-tagger -g $2 'x.prob' | lt-proc $1 'gen.bin'"
    assert mode_stages(mode) == [
        ["lt-proc", "-z", "a b.bin"],
        ["apertium-tagger", "-z", "-g", "x.prob"],
        ["lt-proc", "-z", "-n", "gen.bin"],
    ]
    assert mode_stages("lt-proc $1 g.bin", mark_unknown=True) == [["lt-proc", "-z", "-g", "g.bin"]]


@pytest.mark.parametrize("mode", ["a | b > out", "a; b", "a $HOME", "a | | b"])
def test_mode_stages_refuses_other_shell_syntax(mode: str) -> None:
    with pytest.raises(ConfigError):
        mode_stages(mode)


@pytest.fixture
def translator(tmp_path: Path) -> Iterator[Translator]:
    fake = tmp_path / "fake-module"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    for mode in ("spa-eng", "fr-es"):
        (tmp_path / f"{mode}.mode").write_text(f"'{fake}' $1 {mode}")
    model = Translator(manifest(tmp_path), tmp_path)
    model.load()
    yield model
    model.unload()


def manifest(modes_dir: Path, **extra: Any) -> Manifest:
    routes = {
        "es": {"pairs": ["spa-eng"], "label": "es>en"},
        "fr": {"pairs": ["fr-es", "spa-eng"], "label": "fr>es>en"},
    }
    packages = {"spa-eng": "apertium-eng-spa", "fr-es": "apertium-fr-es"}
    params = {"routes": routes, "packages": packages, "modes_dir": str(modes_dir), **extra}
    return Manifest.model_validate(
        {
            "name": "translate", "version": "1", "runtime": "subprocess",
            "inputs": specs("text", "language"),
            "outputs": specs("translation", "status", "route"),
            "parameters": params,
        }
    )  # fmt: skip


def specs(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in names]


def tensor(values: list[bytes]) -> np.ndarray[Any, Any]:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def test_routes_passthrough_and_unsupported(translator: Translator) -> None:
    texts = tensor([b"hola", b"salut", b"hello", b"hallo", b"oi"])
    languages = tensor([b"es", b"FR", b"en", b"de", b"pt-BR"])
    [out] = translator.predict([{"text": texts, "language": languages}])
    assert isinstance(out, dict)
    assert out["translation"].tolist() == [
        b"spa-eng|HOLA", b"spa-eng|FR-ES|SALUT", b"hello", b"", b""
    ]  # fmt: skip
    assert out["status"].tolist() == [
        b"translated", b"translated", b"passthrough", b"unsupported", b"unsupported"
    ]  # fmt: skip
    assert out["route"].tolist() == [b"es>en", b"fr>es>en", b"en", b"", b""]


def test_bad_item_fails_alone(translator: Translator) -> None:
    good = {"text": tensor([b"hola"]), "language": tensor([b"es"])}
    bad_utf8 = {"text": tensor([b"\xff"]), "language": tensor([b"es"])}
    mismatched = {"text": tensor([b"a", b"b"]), "language": tensor([b"es"])}
    empty = {"text": tensor([]), "language": tensor([])}
    first, second, third, fourth = translator.predict([good, bad_utf8, mismatched, empty])
    assert isinstance(first, dict)
    assert isinstance(second, ValidationError)
    assert isinstance(third, ValidationError)
    assert isinstance(fourth, dict)
    assert fourth["status"].tolist() == []


def test_missing_mode_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="apt-get install apertium-"):
        Translator(manifest(tmp_path), tmp_path).load()
