"""``modelyard`` for stack tests: ``router`` is a stand-in that prints a router's ready line and
waits for SIGTERM (exit 0); it exits 3 before its ready line when its spec's directory holds
``router-fails``, and 4 after it with ``router-exits``. Every other command is the real CLI."""

from __future__ import annotations

import signal
import sys
from pathlib import Path


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] != "router":
        from modelyard.cli.main import main as real  # noqa: PLC0415

        real()
        return
    print("fake router argv: " + " ".join(args[1:]), flush=True)
    if (Path(args[1]).parent / "router-fails").exists():
        sys.exit(3)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    port = args[args.index("--grpc-port") + 1]
    print(f"modelyard router ready pipeline=shouty grpc=127.0.0.1:{port or 1} metrics=127.0.0.1:2",
          flush=True)  # fmt: skip
    if (Path(args[1]).parent / "router-exits").exists():
        sys.exit(4)
    signal.sigwait({signal.SIGTERM})


if __name__ == "__main__":
    main()
