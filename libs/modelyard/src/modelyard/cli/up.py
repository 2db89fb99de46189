"""``modelyard up``: the whole stack in one command, in the foreground, until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

__all__ = ["up_command"]

_READY = "modelyard up ready"
DEFAULT_STATE_DIR = Path(".modelyard") / "up"


@click.command("up")
@click.option(
    "--pipeline",
    "pipelines",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pipeline spec to run (repeatable)  [default: pipelines/docs.yaml]",
)
@click.option(
    "--repository",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model repository root  [default: models]",
)
@click.option("--bootstrap", help="Use this running Kafka cluster instead of starting a broker.")
@click.option(
    "--engine",
    type=click.Choice(["embedded", "kafka"]),
    envvar="MODELYARD_UP_ENGINE",
    help="The broker up starts: the embedded one (memory only; a journal in --state-dir keeps "
    "routing and unanswered requests across restarts) or one Apache Kafka node (storage in "
    "--state-dir; needs `make setup`, run from the repository root)  [default: embedded]",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="MODELYARD_UP_STATE_DIR",
    help="What outlives up: the journal or Kafka's storage, and workers' partition claims; "
    "starting again with the same one keeps the routing state and unanswered requests  "
    f"[default: {DEFAULT_STATE_DIR}]",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Start over: remove what --state-dir keeps (control history, releases, guards, "
    "unanswered requests) first.",
)
@click.option(
    "--port",
    "broker_port",
    type=int,
    default=9092,
    show_default=True,
    envvar="MODELYARD_UP_BROKER_PORT",
    help="Port of the broker up starts (0: any free one).",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    help="Partitions of every pipeline and model topic created  [default: 4]",
)
@click.option(
    "--version",
    "versions",
    multiple=True,
    metavar="STAGE=VERSION",
    help="Initial version of a stage (or PIPELINE.STAGE) with none yet; else the latest.",
)
@click.option("--topic-prefix", help="Prefix of every modelyard topic  [default: yard]")
@click.option("--no-router", is_flag=True, help="Start broker, topics and workers only.")
@click.option(
    "--audit-store",
    envvar="MODELYARD_UP_AUDIT_STORE",
    help="Where the audit sink writes: sqlite:///PATH or postgresql://...  [default: "
    "sqlite:///<state-dir>/audit.db]",
)
@click.option("--no-audit-sink", is_flag=True, help="Run no audit sink.")
@click.option("--no-monitor", is_flag=True, help="Run no monitor.")
@click.option(
    "--monitor-window-s",
    type=click.FloatRange(min=0, min_open=True),
    help="The monitor's tumbling window, in seconds  [default: 60]",
)
@click.option(
    "--router-port",
    type=int,
    default=8000,
    show_default=True,
    envvar="MODELYARD_UP_ROUTER_PORT",
    help="gRPC port of the (first) router; 0: any.",
)
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    help="How children log  [default: console]",
)
@click.option("--log-level", help="Log level of up and its children  [default: INFO]")
@click.option(
    "--max-restarts",
    type=click.IntRange(min=0),
    help="Restarts of each child that dies (worker, router, shadow auditor, audit sink, "
    "monitor) before up stops with exit code 1  [default: 3]",
)
def up_command(
    no_router: bool,
    no_audit_sink: bool,
    no_monitor: bool,
    fresh: bool,
    versions: tuple[str, ...],
    **options: Any,
) -> None:
    """Start a broker (the embedded one unless --engine kafka), create topics, roll out the
    first versions, start one worker per model version in use, one router (and shadow
    auditor) per pipeline, the audit sink and the monitor; stream their logs until Ctrl-C.

    The first start creates a keyring and three keys in --state-dir (keyring.yaml,
    keys/admin.key, keys/router.key, keys/monitor.key): control records are signed with the
    admin key (the control CLI uses it by default) and routers apply only records its keyring
    vouches for; routers sign their audit checkpoints with the router key, the monitor its
    guards' withdrawals with its own. The audit sink stores the audit
    topic in --audit-store: `modelyard audit query|verify` read it. The monitor summarises the
    audit topic per stage and version every --monitor-window-s: `modelyard monitor show
    PIPELINE` prints its windows once they close.

    Prints `modelyard up ready bootstrap=HOST:PORT router=HOST:PORT` on stdout once everything
    is ready. Workers are started for versions that come into use later (rollout, canary,
    shadow). A child that dies (worker, router, shadow auditor, audit sink, monitor) is
    restarted, a router on the port it had; one that dies more than --max-restarts times, or a
    broker that dies, stops the stack with exit code 1 and names it. Ctrl-C or SIGTERM stops
    the routers, then the workers (they drain and commit), then the audit sink and the
    monitor, then the journal, then the broker, and exits 0. Every option is also an
    environment variable MODELYARD_UP_<NAME>.

    Started again with the same --state-dir (after a stop, or after its broker or up itself
    died), up keeps the control history, releases and guards and produces the requests that
    were accepted but not answered again; it prints what it restored. A journal it cannot read
    stops it with an error: --fresh starts over.
    """
    from modelyard.errors import ModelyardError  # noqa: PLC0415
    from modelyard.stack import Stack, StackSettings  # noqa: PLC0415
    from modelyard.stack.plan import parse_versions  # noqa: PLC0415
    from modelyard.telemetry import configure_logging  # noqa: PLC0415

    given = {k: v for k, v in options.items() if v not in (None, ())}
    try:
        if versions:
            given["versions"] = parse_versions(versions)
        if no_router:
            given["router"] = False
        if no_audit_sink:
            given["audit_sink"] = False
        if no_monitor:
            given["monitor"] = False
        if fresh:
            given["fresh"] = True
        if "bootstrap" in given and "engine" in given:
            raise click.UsageError("--engine names the broker up starts; --bootstrap starts none")
        if "bootstrap" not in given:  # up runs the broker: keep its state by default
            given.setdefault("state_dir", DEFAULT_STATE_DIR)
        settings = StackSettings(**given)
    except ModelyardError as exc:
        raise click.UsageError(exc.message) from None
    configure_logging(json=settings.log_format == "json", level=settings.log_level)
    stack = Stack(settings)
    code = _run(stack)
    sys.exit(code)


def _run(stack: Any) -> int:
    """Start, announce, wait for a signal or a failure, stop. The exit code."""
    from modelyard.errors import ModelyardError  # noqa: PLC0415

    stop, started = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not started.is_set() and not stop.is_set():
            stop.set()  # once: a second signal must not interrupt the clean-up
            raise KeyboardInterrupt  # interrupts start(), which cleans up after itself
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stack.start()
        started.set()
        _announce(stack)
        while not stop.wait(0.2) and stack.failure is None:
            pass
    except KeyboardInterrupt:
        click.echo("interrupted while starting; stopped", err=True)
        return 0
    except ModelyardError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        return 1
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stack.failure is not None:
        click.echo(f"Error: {stack.failure}; stopped", err=True)
        return 1
    click.echo("modelyard up: stopped")
    return 0


def _announce(stack: Any) -> None:
    router = stack.router_grpc or "off"
    # one write, newline included, so interleaved logs cannot split it; scripts wait for it
    sys.stdout.write(f"{_READY} bootstrap={stack.bootstrap} router={router}\n")
    sys.stdout.write(_summary(stack) + "\n")
    sys.stdout.flush()


def _summary(stack: Any) -> str:
    from modelyard.audit.store import redact_url  # noqa: PLC0415

    s = stack.settings
    lines = [f"  broker    {stack.bootstrap} ({_broker(stack)})"]
    if (restored := stack.restored) is not None:
        lines.append(f"  restored  {restored.control} control records, {restored.requests} "
                     f"unanswered requests from {stack.state_dir}")  # fmt: skip
    for spec in stack.specs:
        routing = stack.state.pipeline(spec.pipeline)
        versions = " ".join(f"{n}={routing.stage(n).active}" for n in spec.stages)
        lines.append(f"  pipeline  {spec.pipeline}: {versions}  (topics {s.topic_prefix}.p."
                     f"{spec.pipeline}.*, {s.partitions} partitions)")  # fmt: skip
        router = stack.routers.get(spec.pipeline)
        if router:
            lines.append(f"  router    {spec.pipeline}: grpc={router.get('grpc')} "
                         f"metrics={router.get('metrics')}")  # fmt: skip
    for ref, ready in stack.workers.items():
        lines.append(f"  worker    {ref}: grpc={ready.get('grpc')} topic={ready.get('topic')}")
    services = stack.services
    if stack.audit_store is not None:
        store = redact_url(stack.audit_store)
        metrics = services.get("audit-sink", {}).get("metrics")
        lines.append(f"  audit     {store} metrics={metrics}  "
                     f"(modelyard audit query --store {store})")  # fmt: skip
    if (monitor := services.get("monitor")) is not None:
        lines.append(f"  monitor   metrics={monitor.get('metrics')}, {s.monitor_window_s:g} s "
                     f"windows  (modelyard monitor show {stack.specs[0].pipeline} --bootstrap "
                     f"{stack.bootstrap} --topic-prefix {s.topic_prefix})")  # fmt: skip
    if stack.keys is not None:
        lines.append(f"  keys      {stack.keys.keyring} (operator key {stack.keys.admin_key})")
    lines.append(f"  control   modelyard status --bootstrap {stack.bootstrap} "
                 f"--topic-prefix {s.topic_prefix}")  # fmt: skip
    lines.append("  Ctrl-C stops everything")
    return "\n".join(lines)


def _broker(stack: Any) -> str:
    if not stack.embedded:
        return "external cluster"
    kept = f"state in {stack.state_dir}" if stack.state_dir else "nothing kept"
    if stack.settings.engine == "kafka":
        return f"Apache Kafka, {kept}"
    journal = f"journal in {stack.state_dir}" if stack.state_dir else "nothing kept"
    return f"embedded, in memory, {journal}"
