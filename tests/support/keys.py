"""The session's operator keys (``tests/conftest.py`` makes them, as `modelyard up` would)."""

from __future__ import annotations

import os
from pathlib import Path

from modelyard.control.verify import ControlVerifier
from modelyard.keys import SigningKey


def admin() -> SigningKey:
    """The session's admin key: what signs the control records tests write."""
    return SigningKey.load(Path(os.environ["MODELYARD_OPERATOR_KEY"]))


def writer() -> SigningKey:
    """The session's writer key (routers' audit checkpoints)."""
    return SigningKey.load(Path(os.environ["MODELYARD_WRITER_KEY"]))


def verifier() -> ControlVerifier:
    """What routers started in tests verify control records with."""
    return ControlVerifier.from_file(Path(os.environ["MODELYARD_KEYRING"]))


def keys_dir() -> Path:
    """The folder of the session's keyring and keys (a stack's ``keys_dir``)."""
    return Path(os.environ["MODELYARD_KEYRING"]).parent
