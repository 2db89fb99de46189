"""``modelyard broker``: run a broker in the foreground until SIGINT or SIGTERM.

The embedded engine (Tansu, in memory) is the light default; ``--engine kafka`` runs Apache Kafka
in KRaft mode from the jars ``make setup`` fetched, one node or ``--nodes N``.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from modelyard.broker import (
    KAFKA_VERSION,
    BrokerStartError,
    EmbeddedBroker,
    KafkaCluster,
    default_kafka_lib,
)
from modelyard.broker.kraft_security import SaslScram

__all__ = ["broker_command"]


@click.command("broker")
@click.option("--port", type=int, default=0, show_default=True, help="TCP port; 0 picks a free one")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--engine",
    type=click.Choice(["embedded", "kafka"]),
    default="embedded",
    show_default=True,
    help="embedded: Tansu in memory; kafka: Apache Kafka (KRaft), storage on disk.",
)
@click.option(
    "--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="Kafka nodes."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Kafka storage, kept after stop (default: a temporary directory, removed at stop).",
)
@click.option(
    "--kafka-lib",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="MODELYARD_KAFKA_LIB",
    help=f"Apache Kafka's jars [default: {default_kafka_lib()}, filled by make setup].",
)
@click.option(
    "--scram-users",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Kafka only: SASL/SCRAM-SHA-512 listeners and ACLs; a JSON file of user -> password "
    'whose "admin" is the super user (docs/brokers.md, "Security").',
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append the embedded broker's output here (Kafka nodes log in their storage).",
)
def broker_command(engine: str, **options: Any) -> None:
    """Start a Kafka-protocol broker for one machine or tests: the embedded one (Tansu, in
    memory, starts in milliseconds) or Apache Kafka (--engine kafka: KRaft nodes from the jars
    `make setup` fetched; --port is the first node's). Prints `bootstrap=HOST:PORT[,...]` first
    once every node answers; SIGINT or SIGTERM stops it."""
    broker, what = _make_broker(engine, **options)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        broker.start()
        # The first line is machine-readable: tests and scripts parse it.
        click.echo(f"bootstrap={broker.bootstrap}")
        click.echo(f"{what} ready on {broker.bootstrap}; Ctrl-C to stop")
        _wait(stop, broker)
    except BrokerStartError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(f"{what} stopped")


def _make_broker(
    engine: str,
    *,
    port: int,
    host: str,
    nodes: int,
    data_dir: Path | None,
    kafka_lib: Path | None,
    log_file: Path | None,
    scram_users: Path | None,
) -> tuple[EmbeddedBroker | KafkaCluster, str]:
    """The broker ``engine`` names, and how to name it to a person."""
    if engine == "kafka":
        security = _security(scram_users) if scram_users is not None else None
        cluster = KafkaCluster(nodes, port=port, host=host, data_dir=data_dir, lib=kafka_lib,
                               security=security)  # fmt: skip
        secured = ", SASL/SCRAM and ACLs" if security is not None else ""
        return cluster, f"Apache Kafka {KAFKA_VERSION} ({nodes} node(s), KRaft{secured})"
    if nodes != 1 or data_dir is not None or scram_users is not None:
        raise click.UsageError("--nodes, --data-dir and --scram-users need --engine kafka")
    return EmbeddedBroker(port=port, host=host, log_file=log_file), "embedded broker (in memory)"


def _security(path: Path) -> SaslScram:
    """The SCRAM users in ``path`` (JSON: user -> password, "admin" the super user)."""
    try:
        users = json.loads(path.read_text())
        admin = users.pop("admin")
        return SaslScram(users=users, admin_password=admin)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise click.BadParameter(
            f"{path}: expected a JSON object of user -> password with an 'admin' entry ({exc})",
            param_hint="--scram-users",
        ) from None


def _wait(stop: threading.Event, broker: EmbeddedBroker | KafkaCluster) -> None:
    # Wake periodically to notice a broker that died on its own.
    while not stop.wait(0.5):
        if not broker.running:
            raise click.ClickException(f"broker on {broker.bootstrap} exited unexpectedly")


if __name__ == "__main__":
    broker_command()
