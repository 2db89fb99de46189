"""The `modelyard` command: one CLI for operators and developers."""

from __future__ import annotations

import contextlib
import faulthandler
import io
import signal
import sys

import click
from pydantic import ValidationError as SettingsError
from pydantic_core import ErrorDetails

from modelyard import __version__
from modelyard.cli.acls import acls_command
from modelyard.cli.audit import audit_group, audit_sink_command
from modelyard.cli.broker import broker_command
from modelyard.cli.callers import callers_group
from modelyard.cli.control import CONTROL_COMMANDS
from modelyard.cli.dlq import dlq_group
from modelyard.cli.init import init_command
from modelyard.cli.keys import keys_group
from modelyard.cli.models import models_group
from modelyard.cli.monitor import label_command, monitor_group
from modelyard.cli.replay import replay_command
from modelyard.cli.router import router_command
from modelyard.cli.send import send_command
from modelyard.cli.serve import serve_command
from modelyard.cli.shadow_audit import shadow_audit_command
from modelyard.cli.tokens import tokens_group
from modelyard.cli.trace import trace_command
from modelyard.cli.up import up_command
from modelyard.errors import ConfigError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modelyard")
def cli() -> None:
    """modelyard: run graphs of ML models as streaming microservices over Kafka and gRPC."""


cli.add_command(broker_command)
cli.add_command(serve_command)
cli.add_command(models_group)
cli.add_command(router_command)
cli.add_command(up_command)
cli.add_command(init_command)
cli.add_command(send_command)
cli.add_command(trace_command)
cli.add_command(acls_command)
cli.add_command(shadow_audit_command)
cli.add_command(audit_group)
cli.add_command(audit_sink_command)
cli.add_command(tokens_group)
cli.add_command(callers_group)
cli.add_command(dlq_group)
cli.add_command(replay_command)
cli.add_command(keys_group)
cli.add_command(monitor_group)
cli.add_command(label_command)
for _command in CONTROL_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    """The entry point: a bad setting or file is a message and exit code 2, not a traceback."""
    stacks_on_sigusr1()
    try:
        cli()
    except ConfigError as exc:
        _fail(exc.message)
    except SettingsError as exc:
        _fail("; ".join(_setting_problem(error) for error in exc.errors()))


def stacks_on_sigusr1() -> None:
    """SIGUSR1 prints every thread's Python stack to stderr, and the process goes on: what a
    process that will not stop or answer is doing, without a debugger on the machine."""
    with contextlib.suppress(io.UnsupportedOperation):  # stderr is no file (captured): no dump
        faulthandler.register(signal.SIGUSR1, all_threads=True)


def _setting_problem(error: ErrorDetails) -> str:
    name = str(error["loc"][0]) if error["loc"] else ""
    option = f"--{name.replace('_', '-')} (MODELYARD_{name.upper()})" if name else "settings"
    return f"{option}: {error['msg']}"


def _fail(message: str) -> None:
    click.echo(f"modelyard: error: {message}", err=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
