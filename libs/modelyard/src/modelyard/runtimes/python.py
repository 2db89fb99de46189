"""The in-process Python runtime: a manifest's ``entrypoint`` names a ``Model`` subclass."""

from __future__ import annotations

import importlib
import inspect
import re

from modelyard.errors import ConfigError
from modelyard.model import Model

__all__ = ["load_entrypoint"]

_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def load_entrypoint(entrypoint: str) -> type[Model]:
    """The concrete ``Model`` subclass that ``"package.module:Class"`` names.

    Every failure is a ConfigError that says which part of the string is wrong.
    """
    if not _ENTRYPOINT.match(entrypoint):
        raise ConfigError(f"entrypoint {entrypoint!r}: expected 'package.module:Class'")
    module_name, _, attribute = entrypoint.partition(":")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:  # the module, or something it imports, is not installed
        raise ConfigError(
            f"entrypoint {entrypoint!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"entrypoint {entrypoint!r}: {module_name!r} has no {attribute!r}"
            ) from None
    return _as_model_class(entrypoint, target)


def _as_model_class(entrypoint: str, target: object) -> type[Model]:
    if not (isinstance(target, type) and issubclass(target, Model)):
        raise ConfigError(
            f"entrypoint {entrypoint!r} is {target!r}, not a modelyard Model subclass"
        )
    if inspect.isabstract(target):
        raise ConfigError(f"entrypoint {entrypoint!r}: {target.__name__} is abstract")
    return target
