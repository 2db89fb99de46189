"""Secret-bearing YAML files: written 0600 and replaced atomically, refused when others can read.

A tokens file holds only digests, so it is written 0600 but readable as the operator likes; a
callers file holds HMAC keys, so it is refused when group or others may read it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from modelyard.errors import ConfigError

__all__ = ["read_yaml", "write_private_yaml"]

_GROUP_OR_OTHER = 0o077


def read_yaml(path: Path, what: str, *, private: bool) -> dict[str, Any]:
    """The mapping in ``path``; an absent file is empty. ``private``: refuse a readable file."""
    try:
        if private:
            _check_private(path, what)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read it ({exc.strerror})") from None
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path}: not YAML ({exc})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{what} {path}: expected a mapping at the top")
    return document


def write_private_yaml(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` with mode 0600, atomically (a reader sees old or new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # created 0600 with O_EXCL: the secret is never readable by others, not even briefly
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yaml.safe_dump(document, out, sort_keys=False)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _check_private(path: Path, what: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & _GROUP_OR_OTHER:
        raise ConfigError(
            f"{what} {path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
        )
