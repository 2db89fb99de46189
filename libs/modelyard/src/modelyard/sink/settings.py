"""Settings of the audit sink: one frozen model, parsed once at start and passed down.

Every field can be set from the environment with the ``MODELYARD_`` prefix (CLI options win);
the store's URL is ``MODELYARD_AUDIT_STORE`` and is kept out of logs and reprs (it may hold a
password); the keyring is ``MODELYARD_KEYRING``, as for routers.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from modelyard.kafka.process import WorkerSettings

__all__ = ["SinkSettings"]


class SinkSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="MODELYARD_", frozen=True, extra="forbid")

    audit_store: SecretStr = Field(
        validation_alias=AliasChoices("audit_store", "MODELYARD_AUDIT_STORE"),
        description="sqlite:///PATH (or a path) or postgresql://USER@HOST/DB.",
    )
    batch_size: int = Field(default=2000, ge=1, description="Most records per store commit.")
    max_wait_s: float = Field(
        default=0.2, gt=0, description="Longest a record waits for its batch to be written."
    )
    control: bool = Field(default=True, description="Store the control topic's records too.")
    keyring: Path | None = Field(
        default=None,
        description="Keyring of the operator keys control records are verified against, as "
        "routers verify them (MODELYARD_KEYRING); none: control records are stored unverified.",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Where /metrics is served.")
    metrics_port: int = Field(default=0, ge=0, description="0: any free port.")
