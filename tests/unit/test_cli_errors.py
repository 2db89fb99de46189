"""The `modelyard` entry point turns bad settings into one readable line and exit code 2, and
answers SIGUSR1 with its threads' stacks."""

from __future__ import annotations

import subprocess
import sys

import pytest
from modelyard.cli.main import main, stacks_on_sigusr1


def _run(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr("sys.argv", ["modelyard", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)


def test_an_out_of_range_option_names_the_option_and_its_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(monkeypatch, "serve", "noop", "--no-kafka", "--grpc-port", "-5") == 2
    err = capsys.readouterr().err
    assert err.startswith("modelyard: error: --grpc-port (MODELYARD_GRPC_PORT): ")
    assert "greater than or equal to 0" in err
    assert "Traceback" not in err


def test_a_half_tls_configuration_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(monkeypatch, "serve", "noop", "--no-kafka", "--grpc-tls-cert", "c.pem") == 2
    assert "grpc_tls_cert and grpc_tls_key go together" in capsys.readouterr().err


def test_sigusr1_prints_every_threads_stack_and_the_process_goes_on() -> None:
    script = (
        "import os, signal, threading\n"
        "from modelyard.cli.main import stacks_on_sigusr1\n"
        "stacks_on_sigusr1()\n"
        "done = threading.Event()\n"
        "def waiting_worker(): done.wait()\n"
        "worker = threading.Thread(target=waiting_worker); worker.start()\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "done.set(); worker.join(); print('still running')\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "still running\n"
    assert "Current thread" in ran.stderr
    assert "in waiting_worker" in ran.stderr  # the other thread's stack too


def test_stacks_on_sigusr1_accepts_a_stderr_that_is_no_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stacks_on_sigusr1()  # capsys's stderr has no file descriptor: no dump, no error
