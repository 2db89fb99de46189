"""One child process of ``modelyard up``: started, its output streamed with its name, its ready
line parsed, stopped with SIGTERM (it drains) and killed only after a grace period.

Children run in their own process group, so a terminal's Ctrl-C reaches ``up`` alone and ``up``
stops them in order (router first, then workers, then the broker).

:class:`Supervised` is the restart policy every child of ``up`` shares (worker, router, shadow
auditor, audit sink, monitor): a child that dies is started again from its own command line,
keeping the ports it announced, until it has used up ``max_restarts``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Child", "LineSink", "Supervised", "exit_reason", "pin_ports"]

LineSink = Callable[[str, str], None]  # (child name, line without newline)

_TAIL = 40
# terminal control: console log renderers' colours, and the cursor codes and backspaces of
# faust's spinner (the monitor's ready line can come after "\x1b[?25h" or "\b")
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


class Child:
    """A subprocess whose stdout+stderr is read line by line on thread ``up-<name>``.

    ``plain`` strips terminal control codes from what it passes on (when up's own output is not
    a terminal); the ready line is found with them stripped either way.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready_prefix: str,
        sink: LineSink,
        env: Mapping[str, str],
        cwd: Path | None = None,
        plain: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self._plain = plain
        self.ready_prefix = ready_prefix
        self.ready: dict[str, str] | None = None
        self._sink = sink
        self._tail: deque[str] = deque(maxlen=_TAIL)
        self._settled = threading.Event()  # ready line seen, or the output ended
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            text=True,
            errors="replace",
            process_group=0,  # the terminal's Ctrl-C goes to up, which stops children in order
        )
        self._reader = threading.Thread(target=self._read, name=f"up-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def tail(self) -> str:
        """The child's last output lines, for error reports."""
        return "\n".join(self._tail)

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until the ready line is printed; False if the child exited or time ran out."""
        self._settled.wait(max(0.0, timeout_s))
        return self.ready is not None

    def terminate(self) -> None:
        """Ask the child to drain and exit (SIGTERM); no-op if it has exited."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def wait(self, timeout_s: float) -> int | None:
        """Wait up to ``timeout_s`` for the child to exit; its exit code, or None."""
        try:
            return self.proc.wait(max(0.0, timeout_s))
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self, timeout_s: float = 5.0) -> None:
        """After the child exited: finish streaming its output and release the pipe."""
        self._reader.join(timeout_s)
        if not self._reader.is_alive() and self.proc.stdout is not None:
            self.proc.stdout.close()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            text = _CONTROL.sub("", line)
            line = text if self._plain else line
            self._tail.append(line)
            if self.ready is None and text.startswith(self.ready_prefix):
                self.ready = _fields(text)
                self._settled.set()
            self._sink(self.name, line)
        self._settled.set()  # the output ended (the child exited): wake waiters


@dataclass
class Supervised:
    """A child that ``up`` keeps running, and how many times it was restarted already.

    ``sticky`` maps an option of its command line to the ready field announcing that address
    (``{"--grpc-port": "grpc"}``): a restart listens on the port the dead child announced, so
    callers reconnect to the same address, even when the option asked for any free port (0).
    """

    child: Child
    label: str  # how a failure names it: "worker ocr:2", "router:docs"
    sticky: Mapping[str, str] = field(default_factory=dict)
    restarts: int = 0

    def give_up(self, max_restarts: int) -> str | None:
        """Why the dead child is not started again (the stack's failure), or None to restart."""
        if self.restarts < max_restarts:
            return None
        return f"{self.label} {exit_reason(self.child.returncode)} after {self.restarts} restart(s)"

    def restart_argv(self) -> list[str]:
        """The dead child's command line, its sticky options set to the ports it announced."""
        return pin_ports(self.child.argv, self.child.ready, self.sticky)


def exit_reason(code: int | None) -> str:
    """``exited with code 4``; ``exited with code -9 (SIGKILL)`` for a child killed by a signal."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"exited with code {code} ({signal.Signals(-code).name})"
        except ValueError:  # not a signal this platform names
            pass
    return f"exited with code {code}"


def pin_ports(
    argv: Sequence[str], ready: Mapping[str, str] | None, sticky: Mapping[str, str]
) -> list[str]:
    """``argv`` with the value of each option in ``sticky`` replaced by the port of the ready
    field it names (``host:port``); options or fields that are missing are left as they are."""
    pinned = list(argv)
    for option, name in sticky.items():
        address = (ready or {}).get(name, "")
        port = address.rpartition(":")[2]
        if port.isdigit() and option in pinned[:-1]:
            pinned[pinned.index(option) + 1] = port
    return pinned


def _fields(line: str) -> dict[str, str]:
    """``modelyard stage ready model=ocr:1 grpc=h:p`` -> ``{"model": "ocr:1", "grpc": "h:p"}``."""
    return dict(part.split("=", 1) for part in line.split() if "=" in part)
