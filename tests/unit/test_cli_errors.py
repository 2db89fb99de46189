"""The `modelyard` entry point turns bad settings into one readable line and exit code 2."""

from __future__ import annotations

import pytest
from modelyard.cli.main import main


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
