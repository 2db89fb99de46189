"""YAML loading that remembers where every key was, so spec errors can name a line.

``load_with_lines(text)`` returns plain Python data plus a map from field path
(``("stages", "translate", "when")``) to the 1-based line of that key (or list item). Duplicate
keys, which plain ``yaml.safe_load`` silently resolves to the last one, are an error here.

Whatever the text, the result is data or a ``YamlError``: characters YAML forbids, values its
constructors refuse (``2001-02-30``), nesting deeper than ``MAX_DEPTH``, aliases that refer
to themselves, and aliases that expand to more than ``MAX_VALUES`` values ("billion laughs") are
all refused with the line they were found on.
"""

from __future__ import annotations

from typing import Any

import yaml

from modelyard.errors import ConfigError

__all__ = ["MAX_DEPTH", "MAX_VALUES", "FieldPath", "LineMap", "YamlError", "load_with_lines"]

FieldPath = tuple[str | int, ...]
LineMap = dict[FieldPath, int]
MAX_VALUES = 10_000  # values a spec may expand to, aliases included (the reference has ~60)
MAX_DEPTH = 64  # nesting of collections (the reference nests 4 deep)


class YamlError(ConfigError):
    """The text is not valid YAML for a spec (syntax, duplicate key, non-string key)."""

    def __init__(self, message: str, line: int, path: FieldPath = ()) -> None:
        super().__init__(message)
        self.line = line
        self.path = path


def load_with_lines(text: str) -> tuple[Any, LineMap]:
    """Parse one YAML document into plain data and the line of every key path."""
    lines: LineMap = {}
    try:
        loader = _Loader(text)  # refuses non-printable characters already
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        return _Builder(loader).build(node, (), lines), lines
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text) from None
    except RecursionError:  # past MAX_DEPTH already; kept as the last line of defence
        raise YamlError(f"invalid YAML: nested more than {MAX_DEPTH} levels deep", 1) from None
    finally:
        loader.dispose()


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing nesting past MAX_DEPTH as it composes. PyYAML's composer
    recurses several frames per level: left alone, ``[[[[...`` ends in a RecursionError half a
    second and ~1000 frames later (seconds under a coverage tracer), wherever the limit hits."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                raise YamlError(f"invalid YAML: nested more than {MAX_DEPTH} levels deep", line)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _yaml_error(exc: yaml.YAMLError, text: str) -> YamlError:
    """The YamlError of a PyYAML error, at its line when it has one."""
    if isinstance(exc, yaml.MarkedYAMLError):
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        return YamlError(f"invalid YAML: {exc.problem}", line)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        return YamlError(f"invalid YAML: unacceptable character #x{exc.character:04x}", line)
    return YamlError(f"invalid YAML: {exc}", 1)


class _Builder:
    """Plain data from a composed node tree, with lines, bounded in size."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.values = 0
        self.open: set[int] = set()  # ids of the collections being built: an alias to one loops

    def build(self, node: yaml.Node, path: FieldPath, lines: LineMap) -> Any:
        line = node.start_mark.line + 1
        lines.setdefault(path, line)
        self.values += 1
        if self.values > MAX_VALUES:
            raise YamlError(f"the document expands to more than {MAX_VALUES} values", line, path)
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return self.construct(node, path)
        if id(node) in self.open:
            raise YamlError("an alias refers to a collection that contains it", line, path)
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path, lines)
            return [self.build(item, (*path, i), lines) for i, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def construct(self, node: yaml.Node, path: FieldPath) -> Any:
        """A scalar (or a key), as the safe constructor makes it; its refusals are YamlErrors."""
        line = node.start_mark.line + 1
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:  # an unknown tag, bad base64
            raise YamlError(f"invalid YAML: {exc.problem}", line, path) from None
        except (ValueError, OverflowError) as exc:  # a date like 2001-02-30, a 5000-digit int
            raise YamlError(f"invalid YAML value: {exc}", line, path) from None

    def mapping(self, node: yaml.MappingNode, path: FieldPath, lines: LineMap) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):  # a collection as a key
                raise YamlError("keys must be strings, got a collection", line, path)
            key = self.construct(key_node, path)
            if not isinstance(key, str):
                raise YamlError(f"keys must be strings, got {key!r}", line, path)
            if key in out:
                first = lines[(*path, key)]
                raise YamlError(
                    f"duplicate key {key!r} (first at line {first})", line, (*path, key)
                )
            lines[(*path, key)] = line  # the key's line: where an operator looks for the field
            out[key] = self.build(value_node, (*path, key), lines)
        return out
