"""One Apertium language pair kept resident behind NUL-flushed pipes.

How the chain runs: a pair's ``.mode`` file is a shell pipeline of Apertium modules. We do not
hand it to a shell (nor to the ``apertium`` wrapper, which loses the NUL separators): we split
it with ``shlex`` into its stages, put ``-z`` (null flush) after every module's name, set the
placeholders (``$1``: ``-n``, generate without the ``*`` unknown-word mark; ``$2``: the
tagger option, empty) and let ``ResidentProcess`` start the stages piped into each other. The
death of any one module is then seen at once and the chain restarted.

Protocol: write the escaped text, a superblank ``[]`` (without it ``lt-proc -b`` holds the last
word back and the pipe hangs) and a NUL; read up to the next NUL; unescape and unwrap
superblanks. Newlines and ``~`` travel as superblank formatting, as ``apertium-destxt`` does.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from modelyard.errors import ConfigError, ModelError, ValidationError
from modelyard.runtimes.subprocess import NulFraming, ResidentProcess

__all__ = ["ApertiumPair", "escape", "mode_stages", "unescape"]

_SPECIAL = frozenset("\\^$@/<>[]{}*")  # stream-format metacharacters, backslash-escaped
_FORMAT = frozenset("\n~")  # formatting (~ also triggers post-generation): sent as superblanks
_SHELL_OPERATORS = frozenset({";", "&", "&&", "||", "<", ">", ">>", "(", ")"})


def escape(text: str) -> str:
    """Plain text as Apertium stream format, ending with the flushing superblank ``[]``."""
    if "\0" in text:
        raise ValidationError("text contains a NUL character")
    parts = []
    for ch in text:
        if ch in _SPECIAL:
            parts.append("\\" + ch)
        elif ch in _FORMAT:
            parts.append(f"[{ch}]")
        else:
            parts.append(ch)
    return "".join(parts) + "[]"


def unescape(stream: str) -> str:
    """Apertium output as plain text: superblank brackets dropped, backslash escapes undone."""
    out = []
    chars = iter(stream)
    for ch in chars:
        if ch == "\\":
            out.append(next(chars, ""))
        elif ch not in "[]":
            out.append(ch)
    return "".join(out)


def mode_stages(mode_text: str, *, mark_unknown: bool = False) -> list[list[str]]:
    """The argv of every stage of a ``.mode`` pipeline, each with ``-z`` after its program."""
    lexer = shlex.shlex(mode_text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    stages: list[list[str]] = [[]]
    for word in lexer:
        if word == "|":
            stages.append([])
        elif word in _SHELL_OPERATORS or ("$" in word and word not in ("$1", "$2")):
            raise ConfigError(f"unsupported shell syntax {word!r} in mode file")
        elif word == "$1":
            stages[-1].append("-g" if mark_unknown else "-n")
        elif word != "$2":  # $2 is the tagger's optional flag; we pass none
            stages[-1].append(word)
    if not all(stages):
        raise ConfigError("empty stage in mode file")
    return [[argv[0], "-z", *argv[1:]] for argv in stages]


class ApertiumPair:
    """A resident translator for one pair (e.g. ``spa-eng``), built from its mode file."""

    def __init__(self, pair: str, mode_file: Path, timeout_s: float = 10.0) -> None:
        self.pair = pair
        try:
            stages = mode_stages(mode_file.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read Apertium mode file {mode_file}: {exc}") from exc
        self.data_files = [Path(a) for argv in stages for a in argv[1:] if a.startswith("/")]
        self.engine = ResidentProcess(
            *stages,
            framing=NulFraming(),
            timeout_s=timeout_s,
            name=f"apertium {pair}",
            accept=_complete,
        )

    def start(self) -> None:
        self.engine.start()

    def translate(self, text: str) -> str:
        """Translate one text; raises UnavailableError if the engine keeps failing."""
        reply = self.engine.request(escape(text).encode())
        try:
            return unescape(reply.decode())
        except UnicodeDecodeError as exc:
            raise ModelError(f"apertium {self.pair} replied with invalid UTF-8") from exc

    def close(self) -> None:
        self.engine.close()


def _complete(reply: bytes) -> bool:
    """A real reply ends with our flushing superblank; a dying chain flushes empty frames."""
    return reply.rstrip().endswith(b"[]")
