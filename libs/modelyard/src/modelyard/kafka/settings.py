"""The Kafka client settings every service shares; each service's settings model extends it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from modelyard.kafka.poison import default_state_dir

__all__ = ["KafkaClientSettings"]


class KafkaClientSettings(BaseSettings):
    """Where the cluster is and how to talk to it (env prefix: the subclass's)."""

    bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers.")
    topic_prefix: str = Field(default="yard", description="Prefix of every modelyard topic.")
    kafka_config: dict[str, Any] = Field(
        default_factory=dict, description="Extra librdkafka settings (SASL/SSL, tuning), as JSON."
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="sasl.password, kept out of logs and reprs."
    )
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Where a worker keeps its partition claims, so that a message that kills "
        "it is dead-lettered after bounded restarts (keep it across restarts).",
    )

    def kafka_extra(self) -> dict[str, Any]:
        """The settings to pass to librdkafka beside bootstrap.servers, secrets included."""
        extra = dict(self.kafka_config)
        if self.kafka_sasl_password is not None:
            extra["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return extra
