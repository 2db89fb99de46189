"""Build ``translate:1`` from the Apertium packages installed on this machine.

Nothing is downloaded: the engine and the language data come from Debian (``apt-get install``
of the packages in ``MODE_PACKAGES``). The version's artifacts are copies of the pairs' ``.mode``
files (``modes/<pair>.mode``): they are the exact pipelines the stage runs, so their sha256 is
verified at load like any weights. Provenance names every Debian package involved (the data
packages, and the packages owning each program of the chains) with its exact installed version
from ``dpkg-query``, its licence from its Debian copyright file, and the sha256 of its ``.deb``
when that is still in ``/var/cache/apt/archives`` (otherwise none: the version pins it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from modelyard.errors import ConfigError
from modelyard.repository.build import BuildContext, sha256_file
from modelyard.repository.manifest import Manifest

from modelyard_translate.apertium import mode_stages

__all__ = ["MODES_DIR", "MODE_PACKAGES", "ROUTES", "build"]

MODES_DIR = Path("/usr/share/apertium/modes")
APT_ARCHIVES = Path("/var/cache/apt/archives")
# Debian bookworm has no fra/por/ita/deu -> eng pair: fr, pt, it pivot through Spanish.
ROUTES: dict[str, dict[str, Any]] = {
    "es": {"pairs": ["spa-eng"], "label": "es>en"},
    "ca": {"pairs": ["cat-eng"], "label": "ca>en"},
    "fr": {"pairs": ["fr-es", "spa-eng"], "label": "fr>es>en"},
    "pt": {"pairs": ["pt-es", "spa-eng"], "label": "pt>es>en"},
    "it": {"pairs": ["ita-spa", "spa-eng"], "label": "it>es>en"},
}
MODE_PACKAGES = {
    "spa-eng": "apertium-eng-spa",
    "cat-eng": "apertium-eng-cat",
    "fr-es": "apertium-fr-es",
    "pt-es": "apertium-es-pt",
    "ita-spa": "apertium-spa-ita",
}
_SPDX = {"GPL-2": "GPL-2.0-only", "GPL-2+": "GPL-2.0-or-later", "GPL-3": "GPL-3.0-only",
         "GPL-3+": "GPL-3.0-or-later"}  # fmt: skip
_TEXT = [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in ("text", "language")]
_OUT = [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in ("translation", "status", "route")]


def build(ctx: BuildContext) -> list[Manifest]:
    """Write ``translate:1``; ConfigError naming the package if a pair is not installed."""
    modes = {mode: _installed_mode(mode, package) for mode, package in MODE_PACKAGES.items()}
    programs = sorted({argv[0] for m in modes.values() for argv in mode_stages(m.read_text())})
    packages = sorted({*MODE_PACKAGES.values(), *(_owner(p) for p in programs)})
    provenance = [_provenance(p, modes) for p in packages]
    files = {f"modes/{mode}.mode": path for mode, path in sorted(modes.items())}
    return [ctx.write_version(_manifest(provenance, sorted(modes)), files)]


def _manifest(provenance: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    return {
        "name": "translate",
        "version": "1",
        "description": "es/ca/fr/pt/it to English with resident Apertium (Debian) chains.",
        "runtime": "subprocess",
        "entrypoint": "modelyard_translate.model:Translator",
        "inputs": _TEXT,
        "outputs": _OUT,
        "batching": {"max_batch_size": 32, "max_wait_ms": 0.0, "max_queue": 1024},
        "resources": {"cpu": 1.0, "memory_mb": 512},
        "limits": {"max_text_chars": 20000},
        "parameters": {
            "routes": ROUTES,
            "passthrough": ["en"],
            "packages": MODE_PACKAGES,
            "modes_dir": str(MODES_DIR),
            "mode_files": {mode: f"modes/{mode}.mode" for mode in modes},
            "timeout_s": 10.0,
        },
        "provenance": provenance,
    }


def _installed_mode(mode: str, package: str) -> Path:
    path = MODES_DIR / f"{mode}.mode"
    if not path.exists():
        raise ConfigError(f"Apertium mode {mode} not installed: apt-get install {package}")
    return path


def _owner(program: str) -> str:
    """The Debian package that installed ``program`` (e.g. lt-proc -> lttoolbox)."""
    path = shutil.which(program)
    if path is None:
        raise ConfigError(f"{program} not found on PATH: apt-get install apertium")
    return _dpkg("-S", str(Path(path).resolve())).split(":", 1)[0]


def _provenance(package: str, modes: dict[str, Path]) -> dict[str, Any]:
    version, arch = _dpkg("-W", "-f=${Version}\\t${Architecture}", package).split("\t")
    deb = APT_ARCHIVES / f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
    mode_paths = [str(p) for m, p in sorted(modes.items()) if MODE_PACKAGES[m] == package]
    return {
        "source": "debian",
        "package": package,
        "version": version,
        "sha256": sha256_file(deb) if deb.exists() else None,
        "path": mode_paths[0] if mode_paths else None,
        "license": _license(package),
        "notes": "run as a separate process, never linked",
    }


def _license(package: str) -> str:
    """SPDX id of the first ``License:`` of the package's Debian copyright file."""
    copyright_file = Path("/usr/share/doc") / package / "copyright"
    found = re.search(r"^License:\s*(\S+)", _read(copyright_file), re.MULTILINE)
    short = found.group(1) if found else ""
    return _SPDX.get(short, short or f"see {copyright_file}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _dpkg(*args: str) -> str:
    dpkg_query = shutil.which("dpkg-query")
    if dpkg_query is None:
        raise ConfigError("dpkg-query not found: translate builds from Debian packages only")
    try:
        done = subprocess.run([dpkg_query, *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ConfigError(f"dpkg-query {' '.join(args)} failed: {exc}") from exc
    return done.stdout.strip()
