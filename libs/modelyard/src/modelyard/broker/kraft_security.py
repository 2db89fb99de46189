"""SASL/SCRAM listeners and ACLs for an Apache Kafka engine (:class:`SaslScram`).

Clients authenticate with SCRAM-SHA-512 on a ``SASL_PLAINTEXT`` listener; the brokers' own
connections to each other use the ``admin`` user the same way and, to the controller listener,
SASL/PLAIN with a static JAAS user (SCRAM credentials live in the metadata log, which a controller
cannot read before it is up). ``StandardAuthorizer`` refuses everything no ACL allows; the admin
user is the one super user. The SCRAM credentials are written into the storage at format time
(``kafka-storage format --add-scram``), so they exist before the first node answers.

``SASL_PLAINTEXT`` sends passwords in SCRAM exchanges only (never in clear), but the records
themselves travel unencrypted: fine on loopback and in tests; a production cluster adds TLS
(``SASL_SSL``), which is a listener setting here and ``security.protocol`` on the clients.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MECHANISM", "SaslScram"]

MECHANISM = "SCRAM-SHA-512"
_LISTENER = "SASL_PLAINTEXT"
_SAFE = re.compile(r"^[A-Za-z0-9._@+-]+$")  # no quotes, commas or brackets: JAAS and --add-scram


@dataclass(frozen=True)
class SaslScram:
    """SCRAM-SHA-512 users (name → password) a cluster is formatted with, and its super user.

    Passwords are kept out of ``repr``; names and passwords are limited to ``[A-Za-z0-9._@+-]``
    so they fit the storage tool's and JAAS's quoting as they are."""

    users: Mapping[str, str] = field(default_factory=dict, repr=False)
    admin: str = "admin"
    admin_password: str = field(default="admin-secret", repr=False)

    def __post_init__(self) -> None:
        for value in (self.admin, self.admin_password, *self.users, *self.users.values()):
            if not _SAFE.match(value):
                raise ValueError(f"SCRAM names and passwords take [A-Za-z0-9._@+-] only: {value!r}")
        if self.admin in self.users:
            raise ValueError(f"{self.admin!r} is the super user; give clients other names")

    @property
    def listener(self) -> str:
        return _LISTENER

    def credentials(self) -> dict[str, str]:
        """Every SCRAM user, the super user included."""
        return {**self.users, self.admin: self.admin_password}

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments that create every SCRAM credential."""
        args = []
        for name, password in self.credentials().items():
            args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
        return args

    def client_config(self, user: str | None = None) -> dict[str, Any]:
        """librdkafka settings that log in as ``user`` (the super user when None)."""
        name = self.admin if user is None else user
        return {
            "security.protocol": _LISTENER,
            "sasl.mechanism": MECHANISM,
            "sasl.username": name,
            "sasl.password": self.credentials()[name],
        }

    def server_settings(self) -> Mapping[str, object]:
        """server.properties entries: the listener map, SASL on both listeners, the authorizer."""
        scram = _jaas("scram.ScramLoginModule", self.admin, self.admin_password)
        plain = _jaas(
            "plain.PlainLoginModule", self.admin, self.admin_password,
            f'user_{self.admin}="{self.admin_password}"',
        )  # fmt: skip
        return {
            "listener.security.protocol.map": f"{_LISTENER}:{_LISTENER},CONTROLLER:{_LISTENER}",
            "inter.broker.listener.name": _LISTENER,
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": plain,
            f"listener.name.{_LISTENER.lower()}.{MECHANISM.lower()}.sasl.jaas.config": scram,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{self.admin}",
            "allow.everyone.if.no.acl.found": "false",
        }


def _jaas(module: str, user: str, password: str, *extra: str) -> str:
    options = " ".join((f'username="{user}"', f'password="{password}"', *extra))
    return f"org.apache.kafka.common.security.{module} required {options};"
