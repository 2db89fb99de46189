"""The restart policy ``modelyard up`` applies to every child: when to give up, and on which ports
a restarted child listens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import pytest
from modelyard.stack.child import Child, Supervised, exit_reason, pin_ports

ROUTER_ARGV = ["python", "-m", "modelyard.cli.main", "router", "docs.yaml",
               "--grpc-port", "0", "--metrics-port", "0"]  # fmt: skip


@dataclass
class FakeChild:
    """What the policy reads of a dead child."""

    argv: list[str]
    ready: dict[str, str] | None = None
    returncode: int | None = 1


def _supervised(child: FakeChild, restarts: int = 0, **sticky: str) -> Supervised:
    options = {f"--{k.replace('_', '-')}": v for k, v in sticky.items()}
    return Supervised(cast(Child, child), "router:docs", options, restarts)


def test_a_dead_child_is_restarted_until_its_restarts_are_used_up() -> None:
    child = FakeChild(ROUTER_ARGV, returncode=4)
    assert _supervised(child, restarts=0).give_up(max_restarts=2) is None
    assert _supervised(child, restarts=1).give_up(max_restarts=2) is None
    reason = _supervised(child, restarts=2).give_up(max_restarts=2)
    assert reason == "router:docs exited with code 4 after 2 restart(s)"


def test_no_restarts_allowed_gives_up_at_the_first_death() -> None:
    killed = FakeChild(ROUTER_ARGV, returncode=-9)
    reason = _supervised(killed).give_up(max_restarts=0)
    assert reason == "router:docs exited with code -9 (SIGKILL) after 0 restart(s)"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0, "exited with code 0"),
        (3, "exited with code 3"),
        (-15, "exited with code -15 (SIGTERM)"),
        (-200, "exited with code -200"),  # no such signal: the code alone
        (None, "is still running"),
    ],
)
def test_exit_reason_names_the_code_and_the_signal(code: int | None, text: str) -> None:
    assert exit_reason(code) == text


def test_a_restarted_router_listens_on_the_port_its_first_instance_got() -> None:
    ready = {"pipeline": "docs", "grpc": "127.0.0.1:41234", "metrics": "127.0.0.1:9100"}
    child = FakeChild(ROUTER_ARGV, ready=ready)
    argv = _supervised(child, grpc_port="grpc").restart_argv()
    assert argv == [*ROUTER_ARGV[:5], "--grpc-port", "41234", "--metrics-port", "0"]
    assert child.argv == ROUTER_ARGV  # the dead child's own command line is left as it was


def test_a_child_without_sticky_options_restarts_with_its_own_command_line() -> None:
    child = FakeChild(ROUTER_ARGV, ready={"grpc": "127.0.0.1:41234"})
    assert _supervised(child).restart_argv() == ROUTER_ARGV


def test_a_child_that_died_before_announcing_keeps_the_port_already_pinned() -> None:
    pinned = [*ROUTER_ARGV[:5], "--grpc-port", "41234", "--metrics-port", "0"]
    child = FakeChild(pinned, ready=None)  # a restart that died before its ready line
    assert _supervised(child, grpc_port="grpc").restart_argv() == pinned


@pytest.mark.parametrize(
    ("argv", "ready", "expected"),
    [
        (["x", "--grpc-port", "0"], {"grpc": "[::1]:8000"}, ["x", "--grpc-port", "8000"]),
        (["x", "--grpc-port", "0"], {"grpc": "host-without-port"}, ["x", "--grpc-port", "0"]),
        (["x", "--grpc-port", "0"], {"metrics": "h:1"}, ["x", "--grpc-port", "0"]),
        (["x", "--grpc-port"], {"grpc": "h:1"}, ["x", "--grpc-port"]),  # no value to replace
        (["x"], {"grpc": "h:1"}, ["x"]),
    ],
)
def test_pin_ports_replaces_only_options_it_can_read_a_port_for(
    argv: list[str], ready: dict[str, str], expected: list[str]
) -> None:
    assert pin_ports(argv, ready, {"--grpc-port": "grpc"}) == expected
