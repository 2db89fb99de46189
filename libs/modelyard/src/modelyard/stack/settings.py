"""Settings of ``modelyard up``: one frozen model, parsed once and passed down.

Every field can be set from the environment with the ``MODELYARD_UP_`` prefix (a prefix of its
own, so the ``MODELYARD_BOOTSTRAP`` an operator exports for the control CLI does not turn the
embedded broker off); command-line options win.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["StackSettings"]


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELYARD_UP_", frozen=True, extra="forbid")

    pipelines: tuple[Path, ...] = Field(
        default=(Path("pipelines/docs.yaml"),), min_length=1, description="Pipeline spec files."
    )
    repository: Path = Field(default=Path("models"), description="Model repository root.")
    bootstrap: str | None = Field(
        default=None, description="A running Kafka cluster; None starts a broker (``engine``)."
    )
    engine: Literal["embedded", "kafka"] = Field(
        default="embedded",
        description="The broker up starts: the embedded one (memory only; a journal in the "
        "state dir keeps what a restart needs) or one Apache Kafka node (storage in the state "
        "dir).",
    )
    state_dir: Path | None = Field(
        default=None,
        description="What outlives up: the journal or Kafka's storage, workers' partition "
        "claims. None: a temporary directory removed at stop (nothing is kept).",
    )
    keys_dir: Path | None = Field(
        default=None,
        description="Where the keyring and the admin and router keys are (created on first "
        "use); None: the state dir (or, without one, a temporary directory).",
    )
    fresh: bool = Field(
        default=False, description="Remove what the state dir keeps and start over."
    )
    broker_host: str = Field(default="127.0.0.1", description="Address of the broker up starts.")
    broker_port: int = Field(default=0, ge=0, description="Port of the broker up starts (0: any).")
    topic_prefix: str = Field(default="yard", description="Prefix of every modelyard topic.")
    partitions: int = Field(
        default=4, ge=1, description="Partitions of every pipeline and model topic created."
    )
    versions: dict[str, str] = Field(
        default_factory=dict,
        description="Initial versions: 'stage' or 'pipeline.stage' -> version (else the latest).",
    )
    router: bool = Field(default=True, description="Start one router per pipeline.")
    audit_sink: bool = Field(
        default=True, description="Start the audit sink (the audit topic into the store)."
    )
    audit_store: str | None = Field(
        default=None,
        description="Where the sink writes: sqlite:///PATH or postgresql://...; None: "
        "audit.db (SQLite) in the state dir, or in the keys' temporary directory.",
    )
    monitor: bool = Field(
        default=True, description="Start the monitor (windows over the audit topic)."
    )
    monitor_window_s: float = Field(
        default=60.0, gt=0, description="The monitor's tumbling window, in seconds."
    )
    router_port: int = Field(
        default=0, ge=0, description="gRPC port of the first pipeline's router (0: any free)."
    )
    host: str = Field(default="127.0.0.1", description="Bind address of workers and routers.")
    log_format: Literal["console", "json"] = Field(
        default="console", description="How children log (their lines are prefixed with names)."
    )
    log_level: str = Field(default="INFO", description="Log level of children and of up.")
    ready_timeout_s: float = Field(
        default=180.0, gt=0, description="How long every child may take to print its ready line."
    )
    max_restarts: int = Field(
        default=3,
        ge=0,
        description="Restarts of each child (worker, router, shadow auditor, audit sink, monitor) "
        "that dies before up gives up; counted over the stack's life.",
    )
    stop_timeout_s: float = Field(
        default=40.0, gt=0, description="How long a child may drain after SIGTERM before a kill."
    )
