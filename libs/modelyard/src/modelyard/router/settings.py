"""Settings of a router service: one frozen model, parsed once at start and passed down.

Every field can be set from the environment with the ``MODELYARD_`` prefix (CLI options win).
Tracing is configured by the standard ``OTEL_*`` variables, not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelyard.auth import AuthSettings
from modelyard.grpc.tls import GrpcTlsSettings
from modelyard.kafka.settings import ExactlyOnceSettings, KafkaClientSettings

__all__ = ["RouterSettings"]


class RouterSettings(KafkaClientSettings, ExactlyOnceSettings, GrpcTlsSettings, AuthSettings):
    model_config = SettingsConfigDict(env_prefix="MODELYARD_", frozen=True, extra="forbid")

    spec: Path = Field(description="The pipeline spec (YAML) this router walks.")
    repository: Path = Field(default=Path("models"), description="Model repository root.")
    check_contract: bool = Field(
        default=True, description="Refuse to start when the routed versions break the spec."
    )

    partitions: int = Field(
        default=4, ge=1, description="Partitions of the pipeline topics it creates when missing."
    )

    default_timeout_s: float = Field(
        default=30.0, gt=0, description="Deadline of requests that carry none."
    )
    max_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="The longest a request may be routed: later deadlines are cut to this.",
    )
    canary_key: Literal["caller", "request"] = Field(
        default="caller", description="What sticky canary draws hash: the caller or request id."
    )
    max_inflight: int = Field(default=4096, ge=1, description="Requests routed before pausing.")
    recall_results: int = Field(
        default=10_000,
        ge=0,
        description="At start and on each rebalance, the last results per partition of the "
        "results topic whose request ids are remembered, so a request a dead router answered "
        "but never committed is not answered twice (0: off; unused with exactly_once).",
    )
    drain_timeout_s: float = Field(default=30, ge=0, description="Longest SIGTERM drain.")

    grpc_enabled: bool = Field(default=True, description="Serve the pipeline gRPC API.")
    grpc_host: str = Field(default="127.0.0.1", description="gRPC bind address.")
    grpc_port: int = Field(default=8000, ge=0, description="gRPC port (0: any free port).")
    metrics_host: str = Field(default="127.0.0.1", description="HTTP bind address.")
    metrics_port: int = Field(default=9200, ge=0, description="Metrics/health port (0: any).")
    log_json: bool | None = Field(default=None, description="JSON logs; default: unless a TTY.")
    log_level: str = Field(default="INFO", description="Log level.")

    keyring: Path | None = Field(
        default=None,
        description="Operator keyring control records are verified against (required unless "
        "insecure_control; `modelyard keys create`).",
    )
    insecure_control: bool = Field(
        default=False, description="Apply control records unverified (development only)."
    )
    writer_key: Path | None = Field(
        default=None,
        description="Writer key (role writer) that signs audit-chain checkpoints and the "
        "guard's automatic rollbacks; none: chains unsigned, guards cannot roll back.",
    )
    checkpoint_every: int = Field(
        default=1000, ge=1, description="Audit records per signed checkpoint, at most."
    )
    checkpoint_every_s: float = Field(
        default=5.0, gt=0, description="Seconds between signed checkpoints, at most."
    )
