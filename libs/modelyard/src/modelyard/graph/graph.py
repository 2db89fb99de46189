"""The stage graph of a pipeline: order, and what the router may do next.

Edges are implicit. A stage waits for every stage any of its input candidates names (data
edges: fan-out when two stages read one upstream, a join when one stage reads two) and for every
stage its ``when`` condition reads (ordering edges: the condition needs their outputs, or to know
they were skipped).

Skip rule: an input is *available* when one of its candidates is the request or a stage that
ran; candidates are tried in order, a skipped stage's candidate is passed over, and a candidate
whose stage has not settled yet makes the input wait (so "first available" never depends on
timing). A stage with an input that has no available candidate is skipped without evaluating its
condition; a stage whose condition is false is skipped by the router. Reading a skipped stage
in a condition gives ``None`` and does not skip the reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from modelyard.errors import ConfigError

if TYPE_CHECKING:
    from modelyard.graph.spec import Ref, Source, Stage

__all__ = [
    "REQUEST",
    "Frontier",
    "Moves",
    "Step",
    "find_cycle",
    "frontier",
    "resolve",
    "topological_order",
]

REQUEST = "request"  # the pseudo-stage whose outputs are the request's fields
_WAIT: Literal["wait"] = "wait"


@dataclass(frozen=True, slots=True)
class Frontier:
    """The router's next moves: stages to start (after their condition) and stages to skip."""

    run: tuple[str, ...]
    skip: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.run or self.skip)


def _candidate(source: Source, done: Set[str], skipped: Set[str]) -> Ref | Literal["wait"] | None:
    """The first available candidate, None when all were skipped, or "wait"."""
    for ref in source.candidates:
        if ref.stage == REQUEST or ref.stage in done:
            return ref
        if ref.stage not in skipped:
            return _WAIT
    return None


def resolve(source: Source, done: Set[str], skipped: Set[str]) -> Ref | None:
    """The candidate feeding ``source`` now; None if none is available (or not yet settled)."""
    found = _candidate(source, done, skipped)
    return None if found == _WAIT else found


def _next_move(stage: Stage, done: Set[str], skipped: Set[str], settled: Set[str]) -> str | None:
    found = [_candidate(s, done, skipped) for s in stage.inputs.values()]
    if None in found:  # one input can never be fed: skipping now is final, whatever else runs
        return "skip"
    if _WAIT in found or not stage.waits_for <= settled:
        return None
    return "run"


def frontier(stages: Mapping[str, Stage], done: Set[str], skipped: Set[str]) -> Frontier:
    """Stages not yet settled that can run now, and those that must be skipped."""
    run: list[str] = []
    skip: list[str] = []
    settled = done | skipped
    for name, stage in stages.items():
        if name in settled:
            continue
        move = _next_move(stage, done, skipped, settled)
        if move == "run":
            run.append(name)
        elif move == "skip":
            skip.append(name)
    return Frontier(tuple(run), tuple(skip))


@dataclass(frozen=True, slots=True)
class Step:
    """The frontier of one state (stages that ran, stages skipped), with the candidate that
    feeds each input of every stage it runs (one is available for each, or it would not run)."""

    run: tuple[str, ...]
    skip: tuple[str, ...]
    reads: Mapping[str, tuple[tuple[str, Ref], ...]]  # stage -> (input, its candidate) pairs


class Moves:
    """``frontier`` and ``resolve`` of one stage graph, each state worked out once: a flow
    asks for the same few states on every request (a chain has one per stage)."""

    LIMIT = 4096  # states kept; a graph of many conditions has more, and pays again

    def __init__(self, stages: Mapping[str, Stage], outputs: Mapping[str, Source]) -> None:
        self._stages, self._outputs = stages, outputs
        self._steps: dict[tuple[frozenset[str], frozenset[str]], Step] = {}
        self._results: dict[tuple[frozenset[str], frozenset[str]], Reads] = {}

    def step(self, done: frozenset[str], skipped: frozenset[str]) -> Step:
        """What to run and skip now, and what each stage to run reads."""
        found = self._steps.get((done, skipped))
        if found is None:
            found = _remember(self._steps, (done, skipped), self._step(done, skipped))
        return found

    def outputs(self, done: frozenset[str], skipped: frozenset[str]) -> Reads:
        """Each pipeline output and the candidate feeding it now (None: none available)."""
        found = self._results.get((done, skipped))
        if found is None:
            reads = tuple((n, resolve(s, done, skipped)) for n, s in self._outputs.items())
            found = _remember(self._results, (done, skipped), reads)
        return found

    def _step(self, done: frozenset[str], skipped: frozenset[str]) -> Step:
        moves = frontier(self._stages, done, skipped)
        reads = {
            name: tuple(
                (field, ref)
                for field, source in self._stages[name].inputs.items()
                if (ref := resolve(source, done, skipped)) is not None
            )
            for name in moves.run
        }
        return Step(moves.run, moves.skip, reads)


Reads = tuple[tuple[str, "Ref | None"], ...]
_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> _V:
    if len(cache) >= Moves.LIMIT:
        cache.clear()  # a plain dict: safe to share between threads
    cache[key] = value
    return value


def _edges(stages: Mapping[str, Stage]) -> dict[str, list[str]]:
    """stage -> the known stages it waits for, in declaration order."""
    return {n: [d for d in stages if d in s.waits_for] for n, s in stages.items()}


def find_cycle(stages: Mapping[str, Stage]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]`` (each waits for the next), or None."""
    edges, state = _edges(stages), dict.fromkeys(stages, 0)  # 0 new, 1 on path, 2 finished

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in edges[node]:
            if state[dep] == 1:
                return [*path[path.index(dep) :], node, dep] if dep in path else [node, dep]
            if state[dep] == 0 and (cycle := visit(dep, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for name in stages:
        if state[name] == 0 and (cycle := visit(name, [])):
            return cycle
    return None


def topological_order(stages: Mapping[str, Stage]) -> tuple[str, ...]:
    """Every stage after all it waits for; ties keep declaration order."""
    edges, order = _edges(stages), list[str]()
    placed: set[str] = set()
    while len(order) < len(stages):
        ready = [n for n in stages if n not in placed and set(edges[n]) <= placed]
        if not ready:
            raise ConfigError(f"stage graph has a cycle: {' -> '.join(find_cycle(stages) or [])}")
        order.append(ready[0])
        placed.add(ready[0])
    return tuple(order)
