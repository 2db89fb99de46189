"""Reading the deployment files (Dockerfile, .dockerignore, compose, Helm values) for static
checks, and checking that a container's arguments are a command the `modelyard` CLI accepts."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
from modelyard.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
COMPOSE_DIR = ROOT / "compose"
CHART = ROOT / "deploy" / "helm" / "modelyard"
IMAGE_PATHS = {"/app/pipelines": ROOT / "pipelines"}  # what the image copies where
COMPOSE_SPEC_MODULE = "github.com/compose-spec/compose-go/v2@v2.16.2"  # = scripts/setup.sh


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, COPY, RUN, ...
    value: str  # the rest of the instruction, continuation lines joined
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(path: Path = DOCKERFILE) -> tuple[list[Instruction], list[Stage]]:
    """The global instructions (before the first FROM) and the stages, in order."""
    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for ins in _instructions(path.read_text()):
        if ins.keyword == "FROM":
            words = ins.value.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(ins)
        else:
            preamble.append(ins)
    return preamble, stages


def _instructions(text: str) -> Iterator[Instruction]:
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction are dropped by the parser too
        start = start if pending else number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, value = (pending + line).partition(" ")
        pending = ""
        yield Instruction(keyword.upper(), value.strip(), start)


def exec_form(ins: Instruction) -> list[str]:
    """The JSON array of an exec-form instruction (CMD, ENTRYPOINT, HEALTHCHECK ... CMD)."""
    value = ins.value
    if ins.keyword == "HEALTHCHECK":
        value = value[value.index("CMD") + 3 :]
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"line {ins.line}: not in exec form: {ins.value}"
    return [str(p) for p in parsed]


def copy_sources(ins: Instruction) -> list[str]:
    """The source paths of a COPY (options dropped; the last word is the destination)."""
    words = [w for w in ins.value.split() if not w.startswith("--")]
    return words[:-1]


def dockerignore_excludes(path: str, patterns: Sequence[str]) -> bool:
    """Whether the build context leaves ``path`` out (Docker's rules: the last pattern that
    matches the path or one of its parent folders wins; ``!`` re-includes)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern[1:] if negate else pattern
        glob = glob.removeprefix("**/")
        matches = any(
            fnmatch.fnmatchcase(c, glob) or fnmatch.fnmatchcase(c.rsplit("/", 1)[-1], glob)
            if pattern.startswith(("**/", "!**/"))
            else fnmatch.fnmatchcase(c, glob)
            for c in candidates
        )
        if matches:
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def cli_problem(args: Sequence[str]) -> str | None:
    """Why ``modelyard ARGS`` would not parse (None: it parses), without running it.

    Paths the image provides (``/app/pipelines/...``) are checked against the repository files
    the image copies there; click converts every value and rejects unknown options.
    """
    local = [_local_path(a) for a in args]
    command: click.Command = cli
    name = "modelyard"
    while isinstance(command, click.Group) and local and not local[0].startswith("-"):
        sub = command.commands.get(local[0])
        if sub is None:
            return f"{name} has no command {local[0]!r}"
        name, command, local = f"{name} {local[0]}", sub, local[1:]
    try:
        with command.make_context(name, list(local)):
            return None
    except click.exceptions.Exit as exc:  # --help, --version
        return None if exc.exit_code == 0 else f"{name}: exit {exc.exit_code}"
    except click.ClickException as exc:
        return f"{name}: {exc.format_message()}"


def _local_path(arg: str) -> str:
    for inside, here in IMAGE_PATHS.items():
        if arg.startswith(inside + "/"):
            return str(here / arg[len(inside) + 1 :])
    return arg


def compose_spec_schema() -> Path | None:
    """The compose specification's JSON schema, from the compose-go module `make setup`
    downloads through the Go module proxy (None when it is not there)."""
    modcache = os.environ.get("GOMODCACHE")
    if not modcache:
        try:
            done = subprocess.run(
                ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        modcache = done.stdout.strip()
    module, version = COMPOSE_SPEC_MODULE.split("@")
    path = Path(modcache) / f"{module}@{version}" / "schema" / "compose-spec.json"
    return path if path.is_file() else None
