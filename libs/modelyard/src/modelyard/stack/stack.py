"""The whole stack on one machine: broker, topics, control state, workers, routers.

``Stack`` is what ``modelyard up`` runs, and a context manager for tests and demos::

    with Stack(pipelines=[Path("pipelines/docs.yaml")], repository=Path("models")) as stack:
        stack.bootstrap, stack.router_grpc, stack.workers

A version that only takes shadow copies runs at a lower CPU priority (``nice``), like the shadow
auditor: shadow work must never take CPU from requests callers wait for. When such a version
starts serving (promoted, rolled out, canaried), its worker is replaced by one at normal priority;
the old one drains and exits once the new one is ready.

Policy when a child dies on its own: a worker is restarted (its consumer group hands its
partitions to the new process; nothing committed is lost), up to ``max_restarts`` times; after
that, or when a router or the embedded broker dies, the stack is failed (``failure`` says why,
``wait()`` returns) and ``modelyard up`` stops everything and exits 1.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog

from modelyard.broker import BrokerStartError, EmbeddedBroker, wait_for_kafka
from modelyard.control import ControlState
from modelyard.control.topic import ControlFollower
from modelyard.errors import ConfigError
from modelyard.repository.store import ModelRepository
from modelyard.router import load_spec
from modelyard.router.spec import PipelineSpec
from modelyard.stack.child import Child, LineSink
from modelyard.stack.plan import ModelVersion, shadow_only_versions, version_roles
from modelyard.stack.settings import StackSettings
from modelyard.stack.setup import bootstrap_control, create_stack_topics

__all__ = ["ROUTER_READY", "STAGE_READY", "Stack", "StackError"]

log = structlog.get_logger(__name__)

STAGE_READY = "modelyard stage ready"
ROUTER_READY = "modelyard router ready"
SHADOW_AUDIT_READY = "modelyard shadow-audit ready"
_MONITOR_S = 0.5
_BACKGROUND_NICE = 10  # shadow-only workers and shadow auditors
# stage settings that name one worker's model or topic: never shared by every child
_PER_WORKER = frozenset({"MODELYARD_MODEL", "MODELYARD_INPUT_TOPIC", "MODELYARD_GROUP_ID"})


class StackError(ConfigError):
    """The stack could not be brought up, or a part of it died for good."""


@dataclass
class _Retiring:
    """A replaced worker still running: asked once to drain, killed if it outlives that."""

    child: Child
    version: ModelVersion
    asked_at: float | None = None  # when SIGTERM was sent (monotonic)


@dataclass
class _Worker:
    child: Child
    restarts: int = 0
    background: bool = False  # started niced: the version only takes shadow copies


def _print_line(name: str, line: str) -> None:
    sys.stderr.write(f"{name:>16} | {line}\n")  # one write per line: lines never interleave


class Stack:
    """Bring the stack up on ``start()`` (or ``with``); ``stop()`` brings it down in order."""

    def __init__(
        self,
        settings: StackSettings | None = None,
        /,
        *,
        child_env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        on_line: LineSink | None = None,
        cli: Sequence[str] = (sys.executable, "-m", "modelyard.cli.main"),
        **fields: Any,
    ) -> None:
        self.settings = settings or StackSettings(**fields)
        self._cli_prefix = list(cli)
        self.bootstrap = self.settings.bootstrap or ""
        self.specs: list[PipelineSpec] = []
        self.failure: str | None = None
        self._repo = ModelRepository(self.settings.repository.absolute())
        self._child_env, self._cwd = dict(child_env or {}), cwd
        self._sink = on_line or _print_line
        self._broker: EmbeddedBroker | None = None
        self._follower: ControlFollower | None = None
        self._workers: dict[ModelVersion, _Worker] = {}
        self._routers: dict[str, Child] = {}
        self._auditors: dict[str, Child] = {}
        self._missing: set[ModelVersion] = set()
        self._retiring: list[_Retiring] = []  # replaced workers, still running
        self._lock = threading.RLock()
        self._wake, self._stopping, self._failed = (threading.Event() for _ in range(3))
        self._monitor: threading.Thread | None = None

    # --- what tests, demos and the CLI read ------------------------------------------------

    @property
    def embedded(self) -> bool:
        """Whether this stack runs its own (embedded) broker."""
        return self._broker is not None

    @property
    def state(self) -> ControlState:
        """The routing state as the stack's control follower sees it."""
        return self._follower.state if self._follower else ControlState()

    @property
    def workers(self) -> dict[str, dict[str, str]]:
        """``"model:version"`` -> its ready line's fields (grpc, metrics, topic); ready ones."""
        with self._lock:
            items = [(f"{m}:{v}", w.child) for (m, v), w in sorted(self._workers.items())]
        return {ref: c.ready for ref, c in items if c.ready is not None and c.running}

    @property
    def routers(self) -> dict[str, dict[str, str]]:
        """Pipeline -> the fields of its router's ready line (grpc, metrics)."""
        return {p: c.ready for p, c in self._routers.items() if c.ready is not None}

    @property
    def router_grpc(self) -> str | None:
        """``host:port`` of the first pipeline's router, None without routers."""
        first = next(iter(self.routers.values()), None)
        return first.get("grpc") if first else None

    def processes(self) -> dict[str, int]:
        """Child name (``router:<pipeline>``, ``<model>:<version>``) -> pid of its process."""
        with self._lock:
            workers = {f"{m}:{v}": w.child.pid for (m, v), w in sorted(self._workers.items())}
        services = [*self._routers.values(), *self._auditors.values()]
        return {**{c.name: c.pid for c in services}, **workers}

    def wait_worker(self, ref: str, timeout_s: float = 60.0) -> dict[str, str]:
        """The ready fields of worker ``ref`` once it is up (started later by a change, too)."""
        model, _, version = ref.partition(":")
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0 and not self._failed.is_set():
            with self._lock:
                worker = self._workers.get((model, version))
            child = worker.child if worker is not None else None
            if child is not None and child.running and child.wait_ready(min(remaining, 0.5)):
                return dict(child.ready or {})
            self._failed.wait(min(remaining, 0.05))  # not (re)started yet: the monitor will
        raise StackError(f"worker {ref} is not ready: {self.failure or 'timed out'}")

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the stack fails (True) or ``timeout_s`` passes (False)."""
        return self._failed.wait(timeout_s)

    # --- up --------------------------------------------------------------------------------

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.specs = self._load_specs()
        self.bootstrap = self._start_broker()
        create_stack_topics(self.bootstrap, self.settings, self.specs, self._repo)
        bootstrap_control(self.bootstrap, self.settings, self.specs, self._repo)
        self._follower = ControlFollower(
            self.bootstrap, prefix=self.settings.topic_prefix, on_change=lambda _: self._wake.set()
        ).start()
        if not self._follower.wait_caught_up(30):
            raise StackError(f"could not read the control topic at {self.bootstrap}")
        self._reconcile()
        if self.settings.router:
            self._start_routers()
        self._wait_ready()
        self._monitor = threading.Thread(target=self._watch, name="up-monitor", daemon=True)
        self._monitor.start()

    def _load_specs(self) -> list[PipelineSpec]:
        specs = [load_spec(path) for path in self.settings.pipelines]
        names = [s.pipeline for s in specs]
        if len(set(names)) != len(names):
            raise StackError(f"two specs name the same pipeline: {names}")
        return specs

    def _start_broker(self) -> str:
        if self.settings.bootstrap:
            try:
                wait_for_kafka(self.settings.bootstrap, timeout_s=30)
            except TimeoutError as exc:
                raise StackError(str(exc)) from None
            return self.settings.bootstrap
        self._broker = EmbeddedBroker(self.settings.broker_port, self.settings.broker_host)
        try:
            self._broker.start()
        except BrokerStartError as exc:
            raise StackError(f"{exc} (--port 0 picks a free port)") from None
        log.info("embedded broker started", bootstrap=self._broker.bootstrap)
        return self._broker.bootstrap

    def _env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if k not in _PER_WORKER}
        env = {
            **inherited,
            "MODELYARD_LOG_JSON": str(self.settings.log_format == "json").lower(),
            "MODELYARD_LOG_LEVEL": self.settings.log_level,
            "PYTHONUNBUFFERED": "1",  # lines reach up as they are written
        }
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        return {**env, **self._child_env}

    def _cli(self, *args: str) -> list[str]:
        return [*self._cli_prefix, *args]

    def _spawn(self, name: str, argv: list[str], ready_prefix: str) -> Child:
        log.info("starting", child=name)
        return Child(name, argv, ready_prefix=ready_prefix, sink=self._sink, env=self._env(),
                     cwd=self._cwd, plain=not sys.stderr.isatty())  # fmt: skip

    def _start_worker(self, model: str, version: str, background: bool = False) -> Child:
        s = self.settings
        argv = self._cli(
            "serve", f"{model}:{version}", "--repository", str(self._repo.root),
            "--bootstrap", self.bootstrap, "--topic-prefix", s.topic_prefix,
            "--grpc-host", s.host, "--grpc-port", "0",
            "--metrics-host", s.host, "--metrics-port", "0",
        )  # fmt: skip
        if background:
            argv = ["nice", "-n", str(_BACKGROUND_NICE), *argv]
        return self._spawn(f"{model}:{version}", argv, STAGE_READY)

    def _start_routers(self) -> None:
        s = self.settings
        for i, (path, spec) in enumerate(zip(s.pipelines, self.specs, strict=True)):
            argv = self._cli(
                "router", str(path.absolute()), "--repository", str(self._repo.root),
                "--bootstrap", self.bootstrap, "--grpc-port", str(s.router_port if i == 0 else 0),
                "--metrics-port", "0", "--topic-prefix", s.topic_prefix,
            )  # fmt: skip
            self._routers[spec.pipeline] = self._spawn(
                f"router:{spec.pipeline}", argv, ROUTER_READY
            )
            self._auditors[spec.pipeline] = self._spawn_auditor(path)

    def _spawn_auditor(self, path: Path) -> Child:
        s = self.settings
        argv = self._cli(
            "shadow-audit", str(path.absolute()), "--bootstrap", self.bootstrap,
            "--topic-prefix", s.topic_prefix, "--metrics-host", s.host,
        )  # fmt: skip
        # shadows are best effort: comparing them must never take CPU from the primary path
        name = f"shadow-audit:{path.stem}"
        return self._spawn(name, ["nice", "-n", str(_BACKGROUND_NICE), *argv], SHADOW_AUDIT_READY)

    def _reconcile(self) -> None:
        """Start a worker for every version in use that has none, niced if the version only
        takes shadow copies (workers are never retired while up runs: in-flight requests and
        rollbacks may still need them; a niced one is replaced once its version serves)."""
        with self._lock:
            if self._stopping.is_set() or self._follower is None:
                return
            roles = version_roles(self._follower.state, self.specs)
            background = shadow_only_versions(roles)
            for model, version in sorted(set(roles) - set(self._workers) - self._missing):
                if version not in self._repo.versions(model):
                    self._missing.add((model, version))  # said once, not every round
                    log.error("routed version not in the repository; no worker started",
                              model=model, version=version)  # fmt: skip
                    continue
                niced = (model, version) in background
                child = self._start_worker(model, version, niced)
                self._workers[(model, version)] = _Worker(child, background=niced)
            for mv, worker in list(self._workers.items()):
                if worker.background and mv not in background:
                    self._to_foreground(mv, worker)

    def _to_foreground(self, mv: ModelVersion, worker: _Worker) -> None:
        """A shadow-only version now serves callers: replace its niced worker (an unprivileged
        process cannot raise its own priority back). Both share the consumer group, so the
        topic is never unserved for long, and the old one drains before it exits."""
        model, version = mv
        log.info("version now serves callers; restarting its worker at normal priority",
                 worker=f"{model}:{version}")  # fmt: skip
        self._workers[mv] = _Worker(self._start_worker(model, version))
        self._retiring.append(_Retiring(worker.child, mv))

    def _retire_replaced(self) -> None:
        now = time.monotonic()
        with self._lock:
            for old in list(self._retiring):
                successor = self._workers[old.version].child  # a restarted one, if the first died
                if not old.child.running:
                    old.child.close()
                    self._retiring.remove(old)
                elif old.asked_at is None:
                    if successor.running and successor.ready is not None:
                        old.child.terminate()  # SIGTERM, once: it drains, commits and exits
                        old.asked_at = now
                elif now - old.asked_at > self.settings.stop_timeout_s:
                    log.warning("replaced worker did not stop in time; killing it",
                                child=old.child.name)  # fmt: skip
                    old.child.kill()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        with self._lock:
            children = [w.child for w in self._workers.values()]
        children += [*self._routers.values(), *self._auditors.values()]
        for child in children:
            if not child.wait_ready(deadline - time.monotonic()):
                code = child.wait(1.0)  # its output ended: it is exiting, or it timed out
                state = "timed out" if code is None else f"exited with code {code}"
                raise StackError(f"{child.name} did not become ready ({state}); last output:\n"
                                 f"{child.tail()}")  # fmt: skip

    # --- running ---------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(_MONITOR_S)
            self._wake.clear()
            if self._stopping.is_set():
                return
            self._reconcile()
            self._retire_replaced()
            self._check_children()

    def _check_children(self) -> None:
        if self._broker is not None and not self._broker.running:
            self._fail(f"the embedded broker on {self.bootstrap} exited")
        for service in [*self._routers.values(), *self._auditors.values()]:
            if not service.running:
                self._fail(f"{service.name} exited with code {service.returncode}")
        with self._lock:
            dead = [(mv, w) for mv, w in self._workers.items() if not w.child.running]
        for (model, version), worker in dead:
            self._restart(model, version, worker)

    def _restart(self, model: str, version: str, worker: _Worker) -> None:
        ref, code = f"{model}:{version}", worker.child.returncode
        worker.child.close()
        if worker.restarts >= self.settings.max_restarts:
            self._fail(f"worker {ref} exited with code {code} after {worker.restarts} restart(s)")
            return
        log.warning("worker exited unexpectedly; restarting", worker=ref, code=code,
                    restart=f"{worker.restarts + 1}/{self.settings.max_restarts}")  # fmt: skip
        with self._lock:
            if not self._stopping.is_set():
                child = self._start_worker(model, version, worker.background)
                restarted = _Worker(child, worker.restarts + 1, worker.background)
                self._workers[(model, version)] = restarted

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            log.error("stack failed", reason=reason)
        self._failed.set()

    # --- down ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Routers first, then workers (SIGTERM: they drain and commit), then the broker."""
        self._stopping.set()
        self._wake.set()
        if self._monitor is not None:
            self._monitor.join()
        if self._follower is not None:
            self._follower.stop()
        self._stop_children([*self._routers.values(), *self._auditors.values()])
        with self._lock:
            workers = [w.child for w in self._workers.values()]
            workers += [old.child for old in self._retiring]
        self._stop_children(workers)
        if self._broker is not None:
            self._broker.stop()

    def _stop_children(self, children: list[Child]) -> None:
        for child in children:
            child.terminate()
        deadline = time.monotonic() + self.settings.stop_timeout_s
        for child in children:
            if child.wait(deadline - time.monotonic()) is None:
                log.warning("child did not stop in time; killing it", child=child.name)
                child.kill()
            child.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
