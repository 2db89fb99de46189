"""Resident-subprocess runtime: a native engine kept running behind a pipe.

``ResidentProcess`` runs one command, or a chain of commands piped into each other that we start
ourselves (no shell), so the death of any member is seen at once. Requests go over the pipe one
at a time; callers waiting for it queue on a lock and lose nothing when the engine dies, since
nothing of theirs was written yet. The request in flight is re-sent to a restarted engine a
bounded number of times. A thread per engine reads stdout into frames and another drains stderr,
so no pipe fills and callers wait on a queue with a timeout, never in a blocking ``read``.
``SubprocessModel`` is the generic runtime for manifests with ``runtime: subprocess``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import selectors
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Literal, Protocol

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from modelyard.errors import ConfigError, ModelyardError, UnavailableError, ValidationError
from modelyard.model import Inputs, Model, Outcome

__all__ = ["Framing", "LengthPrefixedFraming", "NulFraming", "ResidentProcess", "SubprocessModel"]

log = structlog.get_logger(__name__)
_POLL_S = 0.05  # how often a waiting caller checks that every member of the chain is alive


class Framing(Protocol):
    """How requests and replies are delimited on the pipe."""

    def encode(self, payload: bytes) -> bytes: ...

    def split(self, buffer: bytearray) -> list[bytes]:
        """Remove every complete frame from the front of ``buffer`` and return them."""
        ...


class NulFraming:
    """Payload then a NUL byte (Apertium's ``-z`` null-flush mode)."""

    def encode(self, payload: bytes) -> bytes:
        if b"\0" in payload:
            raise ValidationError("a NUL-framed payload cannot contain a NUL byte")
        return payload + b"\0"

    def split(self, buffer: bytearray) -> list[bytes]:
        *frames, rest = buffer.split(b"\0")
        buffer[:] = rest
        return [bytes(f) for f in frames]


class LengthPrefixedFraming:
    """4-byte big-endian length then the payload, for generic engines."""

    _header = struct.Struct(">I")

    def encode(self, payload: bytes) -> bytes:
        return self._header.pack(len(payload)) + payload

    def split(self, buffer: bytearray) -> list[bytes]:
        frames = []
        while len(buffer) >= 4:
            (size,) = self._header.unpack_from(buffer)
            if len(buffer) < 4 + size:
                break
            frames.append(bytes(buffer[4 : 4 + size]))
            del buffer[: 4 + size]
        return frames


class _DiedError(Exception):
    """The engine exited, closed its stdout or its stdin (internal)."""


class _TimeoutError(Exception):
    """No reply before the deadline (internal)."""


class _Engine:
    """One incarnation of the chain: its processes, reader threads and reply queue."""

    def __init__(
        self,
        commands: Sequence[Sequence[str]],
        framing: Framing,
        env: Mapping[str, str] | None,
        cwd: str | None,
        name: str,
    ) -> None:
        self.framing = framing
        self.replies: queue.Queue[bytes | None] = queue.Queue()  # None: stdout closed
        self.stderr_tail: collections.deque[bytes] = collections.deque(maxlen=4)
        err_r, err_w = os.pipe()  # one stderr pipe shared by the whole chain, one drainer
        try:
            self.procs = _spawn(commands, env, cwd, err_w)
        except BaseException:
            os.close(err_r)
            raise
        finally:
            os.close(err_w)
        self._stdin = _stream(self.procs[0].stdin)
        os.set_blocking(self._stdin.fileno(), False)  # writes honour the deadline (see send)
        self._stopped = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._read, args=(_stream(self.procs[-1].stdout),), name=f"{name} stdout"
            ),
            threading.Thread(target=self._drain, args=(err_r,), name=f"{name} stderr"),
        ]
        for t in self._threads:
            t.daemon = True
            t.start()

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def exchange(self, frame: bytes, deadline: float) -> bytes:
        self._send(frame, deadline)
        while True:
            try:
                reply = self.replies.get(
                    timeout=max(0.0, min(_POLL_S, deadline - time.monotonic()))
                )
            except queue.Empty:
                if not self.alive():
                    raise _DiedError from None
                if time.monotonic() >= deadline:
                    raise _TimeoutError from None
                continue
            if reply is None:
                raise _DiedError
            return reply

    def _send(self, frame: bytes, deadline: float) -> None:
        view = memoryview(frame)
        with selectors.DefaultSelector() as sel:
            sel.register(self._stdin, selectors.EVENT_WRITE)
            while view:
                if time.monotonic() >= deadline:
                    raise _TimeoutError
                if not sel.select(_POLL_S):
                    if not self.alive():
                        raise _DiedError
                    continue
                try:
                    view = view[os.write(self._stdin.fileno(), view) :]
                except BlockingIOError:
                    continue
                except OSError as exc:  # EPIPE: the first member is gone
                    raise _DiedError from exc

    def _read(self, stdout: IO[bytes]) -> None:
        buffer = bytearray()
        while chunk := os.read(stdout.fileno(), 1 << 16):
            buffer += chunk
            for frame in self.framing.split(buffer):
                self.replies.put(frame)
        self.replies.put(None)

    def _drain(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as err:
            while chunk := err.read(1 << 16):
                self.stderr_tail.append(chunk)  # kept for the crash log only

    def stop(self, grace_s: float = 2.0) -> None:
        """Terminate the whole process group, kill what is left, reap, join the threads."""
        with self._stopped:
            _signal_group(self.procs[0].pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for p in self.procs:
                try:
                    p.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal_group(self.procs[0].pid, signal.SIGKILL)
                    p.kill()
                    p.wait()
            for t in self._threads:
                t.join(grace_s)  # EOF arrives once every holder of the pipes is dead
            for p in self.procs:
                for s in (p.stdin, p.stdout):
                    if s is not None:
                        s.close()


def _stream(s: IO[bytes] | None) -> IO[bytes]:
    assert s is not None  # created with PIPE
    return s


def _spawn(
    commands: Sequence[Sequence[str]], env: Mapping[str, str] | None, cwd: str | None, stderr: int
) -> list[subprocess.Popen[bytes]]:
    """Start the chain in a new process group (so one signal reaches every member)."""
    procs: list[subprocess.Popen[bytes]] = []
    stdin: int | IO[bytes] = subprocess.PIPE
    try:
        for argv in commands:
            group = procs[0].pid if procs else 0
            proc = subprocess.Popen(
                list(argv),
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=cwd,
                process_group=group,
                bufsize=0,
            )
            if procs:
                _stream(procs[-1].stdout).close()  # the child owns it now; EOF must propagate
            procs.append(proc)
            stdin = _stream(proc.stdout)
    except (OSError, subprocess.SubprocessError) as exc:
        for p in procs:
            p.kill()
            p.wait()
        raise ConfigError(f"cannot start {list(argv)}: {exc}") from exc
    return procs


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(pgid, sig)


class ResidentProcess:
    """A long-lived engine behind a pipe: thread-safe, restarted on crash and on timeout.

    ``commands`` is one argv, or several forming a pipe chain. ``restarts`` counts engines
    started after the first, for metrics. A request that times out kills and restarts the engine
    and fails with UnavailableError; one whose engine dies is re-sent to a fresh engine, with
    exponential backoff, up to ``max_attempts`` times in all (each attempt has ``timeout_s``).
    ``accept`` may reject a reply as the sign of a dying engine (e.g. frames a chain flushes as
    it reaches EOF): that counts as a crash, not an answer.
    """

    def __init__(
        self,
        *commands: Sequence[str],
        framing: Framing,
        timeout_s: float = 10.0,
        max_attempts: int = 3,
        backoff_s: float = 0.05,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        name: str = "engine",
        accept: Callable[[bytes], bool] | None = None,
    ) -> None:
        if not commands or not all(commands):
            raise ConfigError(f"{name}: empty command")
        self.name, self.framing, self.timeout_s = name, framing, timeout_s
        self.max_attempts, self.backoff_s = max(1, max_attempts), backoff_s
        self.restarts = 0
        self._accept = accept or (lambda _reply: True)
        self._commands, self._env, self._cwd = [list(c) for c in commands], env, cwd
        self._lock = threading.Lock()  # one request on the pipe at a time; waiters queue here
        self._closed = threading.Event()
        self._engine: _Engine | None = None
        self._started = False

    @property
    def pids(self) -> list[int]:
        """Process ids of the current chain (empty when not running)."""
        engine = self._engine
        return [p.pid for p in engine.procs] if engine else []

    def start(self) -> None:
        """Start the engine now instead of on the first request (raises ConfigError)."""
        with self._lock:
            self._ensure()

    def ready(self) -> bool:
        engine = self._engine
        return engine is not None and engine.alive() and not self._closed.is_set()

    def request(self, payload: bytes) -> bytes:
        """Send one payload, return the engine's reply to it."""
        frame = self.framing.encode(payload)
        with self._lock:
            for attempt in range(1, self.max_attempts + 1):
                engine = self._ensure()
                try:
                    reply = engine.exchange(frame, time.monotonic() + self.timeout_s)
                    if self._accept(reply):
                        return reply
                    raise _DiedError
                except _TimeoutError:
                    self._discard(engine, "timeout")
                    self._restart_quietly()
                    raise UnavailableError(
                        f"{self.name}: no reply within {self.timeout_s}s; engine restarted"
                    ) from None
                except _DiedError:
                    self._discard(engine, "crash")
                    if attempt < self.max_attempts:
                        self._closed.wait(self.backoff_s * 2 ** (attempt - 1))
            raise UnavailableError(
                f"{self.name}: engine died {self.max_attempts} times on a request"
            )

    def close(self) -> None:
        """Stop the engine (terminate, then kill) and refuse further requests."""
        self._closed.set()
        engine = self._engine
        if engine is not None:
            engine.stop()  # wakes a caller blocked on it, which then sees the engine dead
        with self._lock:
            if self._engine is not None:
                self._engine.stop()
                self._engine = None

    def _ensure(self) -> _Engine:
        if self._closed.is_set():
            raise UnavailableError(f"{self.name}: closed")
        if self._engine is None:
            self._engine = _Engine(self._commands, self.framing, self._env, self._cwd, self.name)
            self.restarts += self._started
            self._started = True
        return self._engine

    def _discard(self, engine: _Engine, reason: str) -> None:
        engine.stop()
        self._engine = None
        if not self._closed.is_set():
            log.warning(
                "engine restarting",
                engine=self.name,
                reason=reason,
                stderr=b"".join(engine.stderr_tail).decode(errors="replace")[-2000:],
            )

    def _restart_quietly(self) -> None:
        with contextlib.suppress(ModelyardError):  # the next request retries and reports it
            self._ensure()


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    command: list[str] = Field(min_length=1, description="argv; '{model_dir}' is substituted.")
    framing: Literal["nul", "length"] = Field(default="length", description="Pipe framing.")
    timeout_s: float = Field(default=10.0, gt=0, description="Longest wait for one reply.")
    input: str | None = Field(default=None, description="BYTES input name; default the first.")
    output: str | None = Field(default=None, description="BYTES output name; default the first.")
    max_attempts: int = Field(default=3, ge=1, description="Sends of a request across crashes.")


class SubprocessModel(Model):
    """Generic ``runtime: subprocess`` model: each BYTES element in is one request to the engine."""

    _engine: ResidentProcess

    def load(self) -> None:
        try:
            params = _Params.model_validate(self.manifest.parameters)
        except PydanticValidationError as exc:
            raise ConfigError(f"{self.manifest.ref}: invalid subprocess parameters: {exc}") from exc
        self._input = params.input or self.manifest.inputs[0].name
        self._output = params.output or self.manifest.outputs[0].name
        command = [a.replace("{model_dir}", str(self.path)) for a in params.command]
        framing: Framing = NulFraming() if params.framing == "nul" else LengthPrefixedFraming()
        self._engine = ResidentProcess(
            command,
            framing=framing,
            timeout_s=params.timeout_s,
            max_attempts=params.max_attempts,
            cwd=str(self.path),
            name=self.manifest.ref,
        )
        self._engine.start()

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        return [self._one(inputs) for inputs in batch]

    def _one(self, inputs: Inputs) -> Outcome:
        values = inputs[self._input]
        try:
            replies = [self._engine.request(bytes(v)) for v in values.reshape(-1).tolist()]
        except ModelyardError as exc:
            return exc  # fails this request only; its batch mates still get answers
        out = np.empty(len(replies), dtype=object)
        out[:] = replies
        return {self._output: out.reshape(values.shape)}

    def unload(self) -> None:
        self._engine.close()

    def ready(self) -> bool:
        return self._engine.ready()
