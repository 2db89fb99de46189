"""Settings of a stage service: one frozen model, parsed once at start and passed down.

Every field can be set from the environment with the ``MODELYARD_`` prefix (CLI options win).
Tracing is configured by the standard ``OTEL_*`` variables, not here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelyard.auth import GrpcAuthSettings
from modelyard.grpc.tls import GrpcTlsSettings
from modelyard.kafka.process import WorkerSettings
from modelyard.kafka.settings import ExactlyOnceSettings
from modelyard.kafka.worker import LoopOptions

__all__ = ["StageSettings"]


class StageSettings(WorkerSettings, ExactlyOnceSettings, GrpcTlsSettings, GrpcAuthSettings):
    model_config = SettingsConfigDict(env_prefix="MODELYARD_", frozen=True, extra="forbid")

    model: str = Field(description="Model reference: 'name' (latest version) or 'name:version'.")
    repository: Path = Field(default=Path("models"), description="Model repository root.")
    verify_artifacts: bool = Field(default=True, description="Check artifact sha256 at load.")

    kafka_enabled: bool = Field(default=True, description="Consume the model's Kafka topic.")
    input_topic: str | None = Field(
        default=None, description="Topic to consume; default yard.m.<model>.<version>."
    )
    group_id: str | None = Field(
        default=None, description="Consumer group; default yard.g.<model>.<version>."
    )
    partitions: int = Field(
        default=4, ge=1, description="Partitions of the input topic when the stage creates it."
    )
    max_inflight: int = Field(
        default=0, ge=0, description="Unanswered messages before intake pauses; 0: max_queue."
    )
    revoke_grace_s: float = Field(
        default=30,
        ge=0,
        description="How long a revoked partition's messages in the model may "
        "still be answered before it is given up (the new owner redoes what is left).",
    )

    grpc_enabled: bool = Field(default=True, description="Serve OIP v2 over gRPC.")
    grpc_host: str = Field(default="127.0.0.1", description="gRPC bind address.")
    grpc_port: int = Field(default=8001, ge=0, description="gRPC port (0: any free port).")
    metrics_host: str = Field(default="127.0.0.1", description="HTTP bind address.")
    metrics_port: int = Field(default=9100, ge=0, description="Metrics/health port (0: any free).")

    retry_attempts: int = Field(default=3, ge=1, description="Tries for transient model errors.")
    retry_backoff_ms: float = Field(default=50, ge=0, description="First retry backoff (jittered).")
    log_json: bool | None = Field(default=None, description="JSON logs; default: unless a TTY.")
    log_level: str = Field(default="INFO", description="Log level.")

    def stage_loop_options(self, max_queue: int) -> LoopOptions:
        """The worker loop's options; intake is bounded by the model's ``max_queue`` unless
        ``max_inflight`` is set."""
        interval = self.transaction_interval_s if self.exactly_once else self.commit_interval_s
        return self.loop_options(
            max_inflight=self.max_inflight or max_queue,
            commit_interval_s=interval,  # exactly-once: each commit is a transaction
            exactly_once=self.exactly_once,
            transactional_id=self.transactional_id,
            stuck_commit_s=self.stuck_commit_s,
        )
