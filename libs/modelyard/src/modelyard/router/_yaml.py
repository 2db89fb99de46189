"""YAML loading that remembers where every key was, so spec errors can name a line.

``load_with_lines(text)`` returns plain Python data plus a map from field path
(``("stages", "translate", "when")``) to the 1-based line of that key (or list item). Duplicate
keys, which plain ``yaml.safe_load`` silently resolves to the last one, are an error here.
"""

from __future__ import annotations

from typing import Any

import yaml

from modelyard.errors import ConfigError

__all__ = ["FieldPath", "LineMap", "YamlError", "load_with_lines"]

FieldPath = tuple[str | int, ...]
LineMap = dict[FieldPath, int]


class YamlError(ConfigError):
    """The text is not valid YAML for a spec (syntax, duplicate key, non-string key)."""

    def __init__(self, message: str, line: int, path: FieldPath = ()) -> None:
        super().__init__(message)
        self.line = line
        self.path = path


def load_with_lines(text: str) -> tuple[Any, LineMap]:
    """Parse one YAML document into plain data and the line of every key path."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise YamlError(f"invalid YAML: {exc.problem}", line) from None
    finally:
        loader.dispose()
    lines: LineMap = {}
    if node is None:
        return None, lines
    return _build(loader, node, (), lines), lines


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: FieldPath, lines: LineMap) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        return _mapping(loader, node, path, lines)
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, i), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _mapping(
    loader: yaml.SafeLoader, node: yaml.MappingNode, path: FieldPath, lines: LineMap
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise YamlError(f"keys must be strings, got {key!r}", line, path)
        if key in out:
            first = lines[(*path, key)]
            raise YamlError(f"duplicate key {key!r} (first at line {first})", line, (*path, key))
        lines[(*path, key)] = line  # the key's line: where an operator looks for the field
        out[key] = _build(loader, value_node, (*path, key), lines)
    return out
