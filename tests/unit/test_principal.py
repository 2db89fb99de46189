"""Naming the caller from gRPC metadata: bearer tokens, the caller header, anonymous."""

from __future__ import annotations

import pytest
from modelyard.errors import UnauthenticatedError
from modelyard.gateway.principal import ANONYMOUS, TokenPrincipals

TOKENS = {"t-alice": "alice", "t-batch": "svc-batch"}


def test_a_known_bearer_token_names_its_principal() -> None:
    resolve = TokenPrincipals(TOKENS)
    assert resolve([("authorization", "Bearer t-alice")]) == "alice"
    assert resolve([("Authorization", b"bearer  t-batch ")]) == "svc-batch"


def test_the_token_wins_over_the_caller_header() -> None:
    metadata = [("x-modelyard-caller", "mallory"), ("authorization", "Bearer t-alice")]
    assert TokenPrincipals(TOKENS)(metadata) == "alice"


@pytest.mark.parametrize("value", ["Bearer nope", "Basic dXNlcjpwdw==", "Bearer ", "t-alice"])
def test_bad_credentials_are_refused_not_downgraded(value: str) -> None:
    with pytest.raises(UnauthenticatedError):
        TokenPrincipals(TOKENS)([("authorization", value), ("x-modelyard-caller", "bob")])


def test_the_caller_header_names_the_principal_when_trusted() -> None:
    metadata = [("x-modelyard-caller", "bob")]
    assert TokenPrincipals()(metadata) == "bob"
    assert TokenPrincipals(trust_caller_header=False)(metadata) == ANONYMOUS


def test_no_credentials_is_anonymous_or_the_configured_default() -> None:
    assert TokenPrincipals(TOKENS)([("traceparent", "00-x")]) == "anonymous"
    assert TokenPrincipals(default="guest")([]) == "guest"
