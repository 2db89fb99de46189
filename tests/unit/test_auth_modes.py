"""Authentication modes: who each mode takes the caller to be, and what it lets them call."""

from __future__ import annotations

from pathlib import Path

import pytest
from modelyard.auth import (
    Authenticator,
    AuthMode,
    Credentials,
    GrpcAuthSettings,
    Principal,
    TokenEntry,
    TokenTable,
    credentials_of,
    hash_token,
)
from modelyard.errors import ConfigError, PermissionDeniedError, UnauthenticatedError
from modelyard.grpc.tls import GrpcTlsSettings
from pydantic import ValidationError
from pydantic_settings import BaseSettings

TABLE = TokenTable([
    TokenEntry(principal="alice", token_sha256=hash_token("t-alice"), pipelines=("docs",)),
    TokenEntry(principal="svc-cn", pipelines=("docs",), models=("sentiment:2",)),
])  # fmt: skip
ADMIN_HEADER = Credentials(caller_header="admin")
TOKEN = Credentials(authorization="Bearer t-alice", caller_header="admin")
CERT = Credentials(certificate_cn="svc-cn", caller_header="admin")


def auth(mode: AuthMode, table: TokenTable | None = TABLE) -> Authenticator:
    return Authenticator(mode, table)


def test_mode_none_names_everyone_anonymous_and_ignores_the_header() -> None:
    none = Authenticator()
    assert none.authenticate(ADMIN_HEADER) == Principal("anonymous", "none")
    assert none.authenticate(TOKEN) == Principal("anonymous", "none")
    none.authorize_pipeline(Principal.anonymous(), "docs")  # everything is allowed


def test_trusted_network_is_the_only_mode_that_reads_the_caller_header() -> None:
    trusted = auth("trusted-network", None)
    assert trusted.authenticate(ADMIN_HEADER) == Principal("admin", "trusted-header")
    with pytest.raises(UnauthenticatedError, match="x-modelyard-caller"):
        trusted.authenticate(Credentials())
    trusted.authorize_pipeline(Principal("admin", "trusted-header"), "docs")  # no allow list
    with pytest.raises(PermissionDeniedError):  # with one, the header's name is looked up
        auth("trusted-network").authorize_pipeline(Principal("admin", "trusted-header"), "docs")


@pytest.mark.parametrize("mode", ["tokens", "tokens+mtls"])
def test_token_modes_ignore_the_caller_header(mode: AuthMode) -> None:
    assert auth(mode).authenticate(TOKEN) == Principal("alice", "token")
    with pytest.raises(UnauthenticatedError, match="no credentials"):
        auth(mode).authenticate(ADMIN_HEADER)


@pytest.mark.parametrize("value", ["Bearer nope", "Basic dXNlcjpwdw==", "Bearer ", "t-alice"])
def test_bad_tokens_are_refused_never_downgraded(value: str) -> None:
    credentials = Credentials(authorization=value, certificate_cn="svc-cn")
    for mode in ("tokens", "tokens+mtls"):
        with pytest.raises(UnauthenticatedError):
            auth(mode).authenticate(credentials)


def test_mtls_names_the_certificate_subject_and_ignores_tokens() -> None:
    mtls = auth("mtls")
    assert mtls.authenticate(CERT) == Principal("svc-cn", "mtls")
    assert mtls.authenticate(Credentials("Bearer t-alice", None, "svc-cn")).auth == "mtls"
    with pytest.raises(UnauthenticatedError, match="client certificate"):
        mtls.authenticate(TOKEN)
    assert (
        auth("tokens").authenticate(Credentials("Bearer t-alice", None, "svc-cn")).auth == "token"
    )


def test_tokens_and_mtls_takes_the_token_first_then_the_certificate() -> None:
    both = auth("tokens+mtls")
    assert both.authenticate(Credentials("Bearer t-alice", None, "svc-cn")).name == "alice"
    assert both.authenticate(CERT) == Principal("svc-cn", "mtls")


def test_pipelines_and_models_outside_the_grant_are_denied() -> None:
    tokens = auth("tokens")
    alice, cn = Principal("alice", "token"), Principal("svc-cn", "mtls")
    tokens.authorize_pipeline(alice, "docs")
    with pytest.raises(PermissionDeniedError, match="'alice' may not call pipeline 'other'"):
        tokens.authorize_pipeline(alice, "other")
    tokens.authorize_model(cn, "sentiment", "2")
    with pytest.raises(PermissionDeniedError):
        tokens.authorize_model(cn, "sentiment", "1")
    with pytest.raises(PermissionDeniedError):
        tokens.authorize_model(alice, "sentiment", "2")


def test_token_modes_need_a_tokens_file() -> None:
    for mode in ("tokens", "mtls", "tokens+mtls"):
        with pytest.raises(ConfigError, match="tokens file"):
            Authenticator(mode, None)


def test_credentials_come_from_metadata_and_the_verified_certificate() -> None:
    metadata: list[tuple[str, str | bytes]] = [
        ("Authorization", b"Bearer x"),
        ("x-modelyard-caller", "bob"),
    ]
    context = {"x509_common_name": [b"svc-cn"], "x509_subject": [b"CN=svc-cn"]}
    assert credentials_of(metadata, context) == Credentials("Bearer x", "bob", "svc-cn")
    assert credentials_of([], {}) == Credentials()


class _Settings(BaseSettings, GrpcTlsSettings, GrpcAuthSettings):
    pass


def test_settings_refuse_incomplete_modes(tmp_path: Path) -> None:
    assert _Settings().auth == "none"
    with pytest.raises(ValidationError, match="needs tokens_file"):
        _Settings(auth="tokens")
    tokens = tmp_path / "tokens.yaml"
    with pytest.raises(ValidationError, match="needs grpc_tls_client_ca"):
        _Settings(auth="mtls", tokens_file=tokens)
    with pytest.raises(ConfigError, match="does not exist"):
        _Settings(auth="tokens", tokens_file=tokens).authenticator()
    TABLE.save(tokens)
    assert _Settings(auth="tokens", tokens_file=tokens).authenticator().mode == "tokens"
