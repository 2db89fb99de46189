"""`modelyard shadow-audit`: audit and compare a pipeline's shadow replies."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["shadow_audit_command"]

_CONTROL_WAIT_S = 30.0  # as the router: the control topic must be readable before any work


@click.command("shadow-audit")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--bootstrap", envvar="MODELYARD_BOOTSTRAP", default="127.0.0.1:9092",
              show_default=True, help="Kafka bootstrap servers.")  # fmt: skip
@click.option("--topic-prefix", envvar="MODELYARD_TOPIC_PREFIX", default="yard", show_default=True)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--metrics-port", type=int, default=0, show_default=True, help="0: any free port.")
@click.option("--ttl-s", type=float, default=60.0, show_default=True,
              help="How long a reply waits for its other half.")  # fmt: skip
@click.option("--keyring", envvar="MODELYARD_KEYRING", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Keyring the control records it follows are verified against.")  # fmt: skip
@click.option("--insecure-control", is_flag=True,
              help="No keyring: follow control records unverified (development only).")  # fmt: skip
@click.option("--writer-key", envvar="MODELYARD_WRITER_KEY", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 writer key (`modelyard keys create NAME --role writer`) signing "
                   "its audit chains' checkpoints; none: chained, unsigned.")  # fmt: skip
def shadow_audit_command(spec: Path, **options: Any) -> None:
    """Pair the shadow replies of pipeline SPEC with their primary replies.

    Reads yard.p.<pipeline>.shadow, where shadow versions reply and the router copies each
    primary reply of a shadowed stage, and writes one hop record per shadow execution to
    yard.audit (role shadow; `agrees` says whether its outputs match the primary's; a shadow
    that never answered is recorded as no_reply). Serves modelyard_shadow_runs on /metrics.
    Enforces the stages' shadow-disagreement guards (`modelyard guard --shadow-disagreement`):
    a shadow version that disagrees with the primary too often is withdrawn (its shadow and
    canary cleared) by one control record. It reads the control topic to its end before
    reading a reply, and exits with an error when it cannot within 30 s. `modelyard up` runs
    one per pipeline at a lower CPU priority.
    """
    from prometheus_client import CollectorRegistry  # noqa: PLC0415  # keeps --help fast

    from modelyard.cli.control_options import follower_verifier  # noqa: PLC0415
    from modelyard.control.follower import ControlFollower  # noqa: PLC0415
    from modelyard.graph.load import load_spec  # noqa: PLC0415
    from modelyard.kafka.process import (  # noqa: PLC0415
        announce_ready,
        block_until_stopped,
        exit_code,
        stop_on_signals,
    )
    from modelyard.keys import SigningKey  # noqa: PLC0415
    from modelyard.shadows.auditor import ShadowAuditor  # noqa: PLC0415
    from modelyard.shadows.guard import withdrawing_guard  # noqa: PLC0415
    from modelyard.telemetry import (  # noqa: PLC0415
        configure_logging_from_env,
        start_http_server,
        stop_http_server,
    )

    configure_logging_from_env()
    loaded = load_spec(spec)
    pipeline = loaded.pipeline
    registry = CollectorRegistry()
    bootstrap, prefix = options["bootstrap"], options["topic_prefix"]
    verifier = follower_verifier(options["keyring"], options["insecure_control"])
    writer = SigningKey.load(options["writer_key"]) if options["writer_key"] else None
    follower = ControlFollower(bootstrap, prefix=prefix, verifier=verifier, registry=registry)
    follower.start()
    # the guards are in the control records: a pair compared before they are read would be
    # judged against no guard at all, and a tripped shadow left serving its share
    if not follower.wait_caught_up(_CONTROL_WAIT_S):
        follower.stop()
        raise click.ClickException(
            f"could not read the control topic {follower.topic} within {_CONTROL_WAIT_S:.0f} s"
        )
    guard = withdrawing_guard(
        bootstrap, pipeline, lambda: follower.state, prefix=prefix, registry=registry,
        signer=writer, verifier=verifier,
    )  # fmt: skip
    auditor = ShadowAuditor(
        bootstrap, pipeline, prefix=prefix, ttl_s=options["ttl_s"], registry=registry,
        guard=guard, writer_key=writer,
        monitored={n: dict(s.monitor) for n, s in loaded.stages.items() if s.monitor},
    )  # fmt: skip
    host = options["metrics_host"]
    stop = stop_on_signals()  # before starting: a signal during start-up is not lost
    auditor.start()
    http, port = start_http_server(
        host,
        options["metrics_port"],
        registry,
        lambda: {**auditor.health(), "control": follower.caught_up},
    )
    auditor.wait_joined(60)
    announce_ready("shadow-audit", pipeline=pipeline, metrics=f"{host}:{port}")
    block_until_stopped(stop, [auditor])
    auditor.stop()
    guard.join()
    follower.stop()
    stop_http_server(http)
    sys.exit(exit_code([auditor]))
