"""The whole stack on one machine: broker, topics, control state, workers, routers, the audit
sink and the monitor.

``Stack`` is what ``modelyard up`` runs, and a context manager for tests and demos::

    with Stack(pipelines=[Path("pipelines/docs.yaml")], repository=Path("models")) as stack:
        stack.bootstrap, stack.router_grpc, stack.workers

A version that only takes shadow copies runs at a lower CPU priority (``nice``), like the shadow
auditor: shadow work must never take CPU from requests callers wait for. When such a version
starts serving (promoted, rolled out, canaried), its worker is replaced by one at normal
priority; the old one drains and exits once the new one is ready.

Policy when a child dies on its own, the same for every child (worker, router, shadow auditor,
audit sink, monitor; :class:`~modelyard.stack.child.Supervised`): it is started again from its
own command line, up to ``max_restarts`` times over the stack's life. A worker's consumer group
hands its partitions to the new process (nothing committed is lost); a router comes back on the
gRPC port it had (the port the first one got when ``router_port`` is 0), so callers reconnect to
the same address. A child past its restarts, a broker the stack started that dies, or its journal
failing (``stack/engine.py``), fails the stack (``failure`` names the child and its exit code,
``wait()`` returns) and ``modelyard up`` stops everything and exits 1.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog

from modelyard.broker import BrokerStartError, wait_for_kafka
from modelyard.control import ControlState
from modelyard.control.topic import ControlFollower
from modelyard.control.verify import ControlVerifier
from modelyard.errors import ConfigError
from modelyard.graph import load_spec
from modelyard.graph.spec import PipelineSpec
from modelyard.keys import LocalKeys, SigningKey, ensure_local_keys
from modelyard.repository.store import ModelRepository
from modelyard.stack.child import Child, LineSink, Supervised
from modelyard.stack.engine import OwnBroker
from modelyard.stack.plan import ModelVersion, shadow_only_versions, version_roles
from modelyard.stack.restore import Restored
from modelyard.stack.settings import StackSettings
from modelyard.stack.setup import bootstrap_control, create_stack_topics
from modelyard.stack.state_dir import StateDir

__all__ = ["ROUTER_READY", "STAGE_READY", "Stack", "StackError"]

log = structlog.get_logger(__name__)

STAGE_READY = "modelyard stage ready"
ROUTER_READY = "modelyard router ready"
SHADOW_AUDIT_READY = "modelyard shadow-audit ready"
AUDIT_SINK_READY = "modelyard audit-sink ready"
MONITOR_READY = "modelyard monitor ready"
_WATCH_S = 0.5
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
        self._lines = on_line or _print_line
        self._broker: OwnBroker | None = None
        self._state_dir: StateDir | None = None
        self._follower: ControlFollower | None = None
        self._workers: dict[ModelVersion, Supervised] = {}
        self._niced: set[ModelVersion] = set()  # workers started niced: shadow copies only
        self._routers: dict[str, Supervised] = {}  # by pipeline
        self._auditors: dict[str, Supervised] = {}  # by pipeline
        # the audit sink and the monitor, when they run: readers of what the others write
        self._readers: dict[str, Supervised] = {}
        self._missing: set[ModelVersion] = set()
        self._retiring: list[_Retiring] = []  # replaced workers, still running
        self._lock = threading.RLock()
        self._wake, self._stopping, self._failed = (threading.Event() for _ in range(3))
        self._watcher: threading.Thread | None = None
        self._keys_tmp: tempfile.TemporaryDirectory[str] | None = None
        self.keys: LocalKeys | None = None  # the stack's keyring, admin and writer keys

    # --- what tests, demos and the CLI read ------------------------------------------------

    @property
    def embedded(self) -> bool:
        """Whether this stack runs its own broker (``settings.engine``)."""
        return self._broker is not None

    @property
    def restored(self) -> Restored | None:
        """What the journal gave back at start (None: no journal in use)."""
        return self._broker.restored if self._broker is not None else None

    @property
    def state_dir(self) -> Path | None:
        """Where what outlives this stack is kept; None when nothing is."""
        state = self._state_dir
        return state.path if state is not None and state.durable else None

    @property
    def state(self) -> ControlState:
        """The routing state as the stack's control follower sees it."""
        return self._follower.state if self._follower else ControlState()

    @property
    def workers(self) -> dict[str, dict[str, str]]:
        """``"model:version"`` -> its ready line's fields (grpc, metrics, topic); ready ones."""
        with self._lock:
            items = [(w.child.name, w.child) for _, w in sorted(self._workers.items())]
        return {ref: c.ready for ref, c in items if c.ready is not None and c.running}

    @property
    def routers(self) -> dict[str, dict[str, str]]:
        """Pipeline -> the fields of its router's ready line (grpc, metrics); ready ones."""
        with self._lock:
            items = [(p, s.child) for p, s in self._routers.items()]
        return {p: c.ready for p, c in items if c.ready is not None and c.running}

    @property
    def services(self) -> dict[str, dict[str, str]]:
        """``audit-sink``, ``monitor`` -> the fields of its ready line (metrics...); ready ones."""
        with self._lock:
            items = [(n, s.child) for n, s in self._readers.items()]
        return {n: c.ready for n, c in items if c.ready is not None and c.running}

    @property
    def router_grpc(self) -> str | None:
        """``host:port`` of the first pipeline's router; None without one (or while it restarts)."""
        first = self.routers.get(self.specs[0].pipeline) if self.specs else None
        return first.get("grpc") if first else None

    def processes(self) -> dict[str, int]:
        """Child name (``router:<pipeline>``, ``shadow-audit:<spec>``, ``audit-sink``,
        ``monitor``, ``<model>:<version>``) -> pid of its current process."""
        return {s.child.name: s.child.pid for s in self._supervised()}

    def wait_child(self, name: str, timeout_s: float = 60.0) -> dict[str, str]:
        """The ready fields of child ``name`` (see ``processes()``) once it is up: started later
        by a change, or restarted after it died."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0 and not self._failed.is_set():
            child = next((s.child for s in self._supervised() if s.child.name == name), None)
            if child is not None and child.running and child.wait_ready(min(remaining, 0.5)):
                return dict(child.ready or {})
            self._failed.wait(min(remaining, 0.05))  # not (re)started yet: the watcher will
        raise StackError(f"{name} is not ready: {self.failure or 'timed out'}")

    def wait_worker(self, ref: str, timeout_s: float = 60.0) -> dict[str, str]:
        """The ready fields of worker ``ref`` (``model:version``) once it is up."""
        return self.wait_child(ref, timeout_s)

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
        if self._broker is not None:
            self._broker.restore_and_journal(self.specs)  # before anything routes
        self.keys = keys = self._local_keys()
        verifier = ControlVerifier.from_file(keys.keyring)
        admin = SigningKey.load(keys.admin_key)
        bootstrap_control(
            self.bootstrap, self.settings, self.specs, self._repo, signer=admin, verifier=verifier
        )
        self._follower = ControlFollower(
            self.bootstrap,
            prefix=self.settings.topic_prefix,
            on_change=lambda _: self._wake.set(),
            verifier=verifier,
        ).start()
        if not self._follower.wait_caught_up(30):
            raise StackError(f"could not read the control topic at {self.bootstrap}")
        self._reconcile()
        if self.settings.audit_sink:
            self._readers["audit-sink"] = self._spawn_sink()
        if self.settings.monitor:
            self._readers["monitor"] = self._spawn_monitor()
        if self.settings.router:
            self._start_routers()
        self._wait_ready()
        self._watcher = threading.Thread(target=self._watch, name="up-watch", daemon=True)
        self._watcher.start()

    def _local_keys(self) -> LocalKeys:
        """The keyring and keys of this stack: kept in the state dir (a restarted stack must
        verify the control records it signed before), else in a directory removed at stop."""
        if self.settings.keys_dir is not None:
            return ensure_local_keys(self.settings.keys_dir)
        if self._state_dir is not None:
            return ensure_local_keys(self._state_dir.path)
        self._keys_tmp = tempfile.TemporaryDirectory(prefix="modelyard-keys-")
        return ensure_local_keys(Path(self._keys_tmp.name))

    def _load_specs(self) -> list[PipelineSpec]:
        specs = [load_spec(path) for path in self.settings.pipelines]
        names = [s.pipeline for s in specs]
        if len(set(names)) != len(names):
            raise StackError(f"two specs name the same pipeline: {names}")
        return specs

    def _start_broker(self) -> str:
        s = self.settings
        if s.bootstrap:
            if s.state_dir is not None:  # partition claims only: the cluster keeps the rest
                self._state_dir = StateDir(s.state_dir, None).open()
            try:
                wait_for_kafka(s.bootstrap, timeout_s=30)
            except TimeoutError as exc:
                raise StackError(str(exc)) from None
            return s.bootstrap
        self._state_dir = StateDir(s.state_dir, s.engine, fresh=s.fresh).open()
        self._broker = OwnBroker(s, self._state_dir)
        try:
            return self._broker.start()
        except BrokerStartError as exc:
            raise StackError(str(exc)) from None

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
        if self._state_dir is not None:
            env["MODELYARD_STATE_DIR"] = str(self._state_dir.claims)
        if self.keys is not None:  # routers verify control records; writers sign checkpoints
            env["MODELYARD_KEYRING"] = str(self.keys.keyring)
            env["MODELYARD_WRITER_KEY"] = str(self.keys.router_key)
        if (store := self.audit_store) is not None:  # by environment: a PostgreSQL URL may
            env["MODELYARD_AUDIT_STORE"] = store  # hold a password, never on a command line
        return {**env, **self._child_env}

    def _cli(self, *args: str) -> list[str]:
        return [*self._cli_prefix, *args]

    def _spawn(self, name: str, argv: list[str], ready_prefix: str) -> Child:
        log.info("starting", child=name)
        return Child(name, argv, ready_prefix=ready_prefix, sink=self._lines, env=self._env(),
                     cwd=self._cwd, plain=not sys.stderr.isatty())  # fmt: skip

    def _supervised(self) -> list[Supervised]:
        """Every child the stack keeps running: routers, shadow auditors, the audit sink and the
        monitor, workers."""
        with self._lock:
            return [*self._routers.values(), *self._auditors.values(), *self._readers.values(),
                    *self._workers.values()]  # fmt: skip

    def _start_worker(self, model: str, version: str, background: bool = False) -> Supervised:
        s = self.settings
        argv = self._cli(
            "serve", f"{model}:{version}", "--repository", str(self._repo.root),
            "--bootstrap", self.bootstrap, "--topic-prefix", s.topic_prefix,
            "--grpc-host", s.host, "--grpc-port", "0",
            "--metrics-host", s.host, "--metrics-port", "0",
        )  # fmt: skip
        if background:
            argv = ["nice", "-n", str(_BACKGROUND_NICE), *argv]
        child = self._spawn(f"{model}:{version}", argv, STAGE_READY)
        return Supervised(child, f"worker {child.name}")

    def _start_routers(self) -> None:
        s = self.settings
        for i, (path, spec) in enumerate(zip(s.pipelines, self.specs, strict=True)):
            argv = self._cli(
                "router", str(path.absolute()), "--repository", str(self._repo.root),
                "--bootstrap", self.bootstrap, "--grpc-port", str(s.router_port if i == 0 else 0),
                "--metrics-port", "0", "--topic-prefix", s.topic_prefix,
            )  # fmt: skip
            child = self._spawn(f"router:{spec.pipeline}", argv, ROUTER_READY)
            # restarted on the port it announced: callers reconnect to the same address
            self._routers[spec.pipeline] = Supervised(child, child.name, {"--grpc-port": "grpc"})
            self._auditors[spec.pipeline] = self._spawn_auditor(path)

    def _spawn_auditor(self, path: Path) -> Supervised:
        s = self.settings
        argv = self._cli(
            "shadow-audit", str(path.absolute()), "--bootstrap", self.bootstrap,
            "--topic-prefix", s.topic_prefix, "--metrics-host", s.host,
        )  # fmt: skip
        # shadows are best effort: comparing them must never take CPU from the primary path
        name = f"shadow-audit:{path.stem}"
        niced = ["nice", "-n", str(_BACKGROUND_NICE), *argv]
        return Supervised(self._spawn(name, niced, SHADOW_AUDIT_READY), name)

    @property
    def audit_store(self) -> str | None:
        """The store the audit sink writes to (None: no sink runs)."""
        if not self.settings.audit_sink:
            return None
        if self.settings.audit_store:
            return self.settings.audit_store
        folder = self._state_dir.path if self._state_dir is not None else None
        if folder is None and self.keys is not None:
            folder = self.keys.keyring.parent  # a temporary directory, removed at stop
        return f"sqlite:///{(folder or Path()).absolute() / 'audit.db'}"

    def _spawn_sink(self) -> Supervised:
        s = self.settings
        argv = self._cli(
            "audit-sink", "--bootstrap", self.bootstrap, "--topic-prefix", s.topic_prefix,
            "--metrics-host", s.host, "--metrics-port", "0",
        )  # fmt: skip
        return Supervised(self._spawn("audit-sink", argv, AUDIT_SINK_READY), "audit-sink")

    def _spawn_monitor(self) -> Supervised:
        s = self.settings
        argv = self._cli(
            "monitor", "--bootstrap", self.bootstrap, "--topic-prefix", s.topic_prefix,
            "--metrics-host", s.host, "--metrics-port", "0", "--window-s", str(s.monitor_window_s),
        )  # fmt: skip
        argv += [arg for path in s.pipelines for arg in ("--spec", str(path.absolute()))]
        if (keys := self.keys) is not None:  # records verified; its guards' withdrawals signed
            argv += ["--keyring", str(keys.keyring), "--writer-key", str(keys.monitor_key)]
        # not niced, unlike the shadow auditor: its guards withdraw a bad canary, which must not
        # wait for the CPU that the traffic it judges is taking
        return Supervised(self._spawn("monitor", argv, MONITOR_READY), "monitor")

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
                self._workers[(model, version)] = self._start_worker(model, version, niced)
                if niced:
                    self._niced.add((model, version))
            for mv, worker in list(self._workers.items()):
                if mv in self._niced and mv not in background:
                    self._to_foreground(mv, worker)

    def _to_foreground(self, mv: ModelVersion, worker: Supervised) -> None:
        """A shadow-only version now serves callers: replace its niced worker (an unprivileged
        process cannot raise its own priority back). Both share the consumer group, so the
        topic is never unserved for long, and the old one drains before it exits."""
        model, version = mv
        log.info("version now serves callers; restarting its worker at normal priority",
                 worker=f"{model}:{version}")  # fmt: skip
        self._workers[mv] = self._start_worker(model, version)
        self._niced.discard(mv)
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
        for child in [s.child for s in self._supervised()]:
            if not child.wait_ready(deadline - time.monotonic()):
                code = child.wait(1.0)  # its output ended: it is exiting, or it timed out
                state = "timed out" if code is None else f"exited with code {code}"
                raise StackError(f"{child.name} did not become ready ({state}); last output:\n"
                                 f"{child.tail()}")  # fmt: skip

    # --- running ---------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(_WATCH_S)
            self._wake.clear()
            if self._stopping.is_set():
                return
            self._reconcile()
            self._retire_replaced()
            self._check_children()

    def _check_children(self) -> None:
        if self._broker is not None and (failure := self._broker.failure) is not None:
            self._fail(failure)
        for supervised in self._supervised():
            if not supervised.child.running:
                self._restart(supervised)

    def _restart(self, supervised: Supervised) -> None:
        """Start a dead child again from its command line, or fail the stack past its restarts."""
        dead = supervised.child
        dead.close()
        if (reason := supervised.give_up(self.settings.max_restarts)) is not None:
            self._fail(reason)
            return
        log.warning("child exited unexpectedly; restarting", child=dead.name,
                    code=dead.returncode,
                    restart=f"{supervised.restarts + 1}/{self.settings.max_restarts}")  # fmt: skip
        with self._lock:
            if not self._stopping.is_set():
                supervised.child = self._spawn(dead.name, supervised.restart_argv(),
                                               dead.ready_prefix)  # fmt: skip
                supervised.restarts += 1

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            log.error("stack failed", reason=reason)
        self._failed.set()

    # --- down ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Routers first, then workers (SIGTERM: they drain and commit), then the audit sink and
        the monitor, then the broker."""
        self._stopping.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join()
        if self._follower is not None:
            self._follower.stop()
        with self._lock:
            services = [s.child for s in [*self._routers.values(), *self._auditors.values()]]
            readers = [s.child for s in self._readers.values()]  # last: they read the others
            workers = [w.child for w in self._workers.values()]
            workers += [old.child for old in self._retiring]
        self._stop_children(services)
        self._stop_children(workers)
        self._stop_children(readers)
        if self._broker is not None:
            self._broker.stop()
        if self._state_dir is not None:
            self._state_dir.close()
        if self._keys_tmp is not None:
            self._keys_tmp.cleanup()

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
