"""The Kafka client settings every service shares; each service's settings model extends it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from modelyard.kafka.config import SECRET_KEYS
from modelyard.kafka.poison import default_state_dir

__all__ = ["ExactlyOnceSettings", "KafkaClientSettings"]


class KafkaClientSettings(BaseSettings):
    """Where the cluster is and how to talk to it (env prefix: the subclass's)."""

    bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers.")
    topic_prefix: str = Field(default="yard", description="Prefix of every modelyard topic.")
    kafka_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra librdkafka settings (SASL/SSL, tuning), as JSON, e.g. "
        '{"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", '
        '"sasl.username": "router"}; secrets in it (sasl.password, ssl.key.password, ...) are '
        "kept out of logs and reprs.",
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="sasl.password, kept out of logs and reprs."
    )
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Where a worker keeps its partition claims, so that a message that kills "
        "it is dead-lettered after bounded restarts (keep it across restarts).",
    )

    @field_validator("kafka_config", mode="after")
    @classmethod
    def _hide_secrets(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Secret values become ``SecretStr``: a repr, a dump or a log line shows ``**********``."""
        return {
            key: SecretStr(str(value)) if key in SECRET_KEYS and value is not None else value
            for key, value in config.items()
        }

    def kafka_extra(self) -> dict[str, Any]:
        """The settings to pass to librdkafka beside bootstrap.servers, secrets included (never
        log this: :func:`modelyard.kafka.config.redacted` is what to show)."""
        extra = {
            key: value.get_secret_value() if isinstance(value, SecretStr) else value
            for key, value in self.kafka_config.items()
        }
        if self.kafka_sasl_password is not None:
            extra["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return extra


class ExactlyOnceSettings(BaseSettings):
    """Exactly-once results, for the roles that offer them (stages and routers)."""

    exactly_once: bool = Field(
        default=False,
        description="Commit the records produced and the offsets consumed in one Kafka "
        "transaction (every commit interval), so a crash neither loses nor duplicates a "
        "result; needs a broker with transactions, and read_committed readers "
        "(docs/delivery.md).",
    )
    transaction_interval_s: float = Field(
        default=0.1,
        gt=0,
        description="Exactly-once: the longest a transaction stays open under load (its "
        "records wait for it); an idle worker commits at once.",
    )
    stuck_commit_s: float = Field(
        default=300.0,
        gt=0,
        description="A commit (a transaction's, under exactly-once) under way longer than "
        "this fails the worker and its process exits 1, for its supervisor to restart it: "
        "librdkafka can block in one for good after a broker dies (docs/delivery.md).",
    )
    transactional_id: str | None = Field(
        default=None,
        description="Exactly-once: this instance's transactional id, stable across its "
        "restarts (e.g. a StatefulSet pod name); default "
        "<group>.<host>.<state-dir digest>.<slot>, the slot held in the state directory.",
    )
