"""``modelyard broker``: run the embedded broker in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from modelyard.broker import BrokerStartError, EmbeddedBroker

__all__ = ["broker_command"]


@click.command("broker")
@click.option("--port", type=int, default=0, show_default=True, help="TCP port; 0 picks a free one")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append the broker's output here.",
)
def broker_command(port: int, host: str, log_file: Path | None) -> None:
    """Start the embedded Kafka-compatible broker (Tansu, in memory) for one machine or tests."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(port=port, host=host, log_file=log_file)
    try:
        broker.start()
        # The first line is machine-readable: tests and scripts parse it.
        click.echo(f"bootstrap={broker.bootstrap}")
        click.echo(f"embedded broker ready on {broker.bootstrap} (in memory); Ctrl-C to stop")
        _wait(stop, broker)
    except BrokerStartError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("embedded broker stopped")


def _wait(stop: threading.Event, broker: EmbeddedBroker) -> None:
    # Wake periodically to notice a broker that died on its own.
    while not stop.wait(0.5):
        if not broker.running:
            raise click.ClickException(f"embedded broker on {broker.bootstrap} exited unexpectedly")


if __name__ == "__main__":
    broker_command()
