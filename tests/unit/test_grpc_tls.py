"""gRPC TLS settings: incomplete or unreadable ones fail at start, naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest
from modelyard.errors import ConfigError
from modelyard.grpc.tls import GrpcTlsSettings
from pydantic import ValidationError


def test_plain_tcp_without_a_certificate() -> None:
    settings = GrpcTlsSettings()
    assert not settings.grpc_tls
    assert settings.grpc_credentials() is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"grpc_tls_cert": "c.pem"}, "go together"),
        ({"grpc_tls_key": "k.pem"}, "go together"),
        ({"grpc_tls_client_ca": "ca.pem"}, "needs grpc_tls_cert"),
    ],
)
def test_incomplete_settings_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GrpcTlsSettings.model_validate(fields)


def test_missing_or_non_pem_files_name_the_option(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    missing = GrpcTlsSettings(grpc_tls_cert=tmp_path / "nope.pem", grpc_tls_key=junk)
    with pytest.raises(ConfigError, match=r"grpc_tls_cert .*nope.pem: cannot read it"):
        missing.grpc_credentials()
    not_pem = GrpcTlsSettings(grpc_tls_cert=junk, grpc_tls_key=junk)
    with pytest.raises(ConfigError, match=r"grpc_tls_cert .*: not a PEM file"):
        not_pem.grpc_credentials()
