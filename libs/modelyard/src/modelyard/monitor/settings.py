"""The monitor's settings: one frozen model, parsed once at start (env prefix ``MODELYARD_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelyard.kafka.settings import KafkaClientSettings

__all__ = ["MonitorSettings", "monitor_group", "monitor_topic"]


def monitor_topic(prefix: str) -> str:
    """Where the window summaries go (JSON, docs/monitor.md)."""
    return f"{prefix}.monitor"


def monitor_group(prefix: str) -> str:
    """The monitors' consumer group (faust's app id: its changelog topics start with it)."""
    return f"{prefix}.g.monitor"


class MonitorSettings(KafkaClientSettings):
    """`modelyard monitor`: windows over the audit topic."""

    model_config = SettingsConfigDict(env_prefix="MODELYARD_", frozen=True, extra="forbid")

    window_s: float = Field(default=60.0, gt=0, description="Tumbling window size.")
    grace_s: float = Field(
        default=5.0, ge=0, description="How long after its end a window waits for late hops."
    )
    retention_s: float = Field(
        default=900.0, gt=0, description="How long a window is kept (and revised by late hops)."
    )
    tick_s: float = Field(default=1.0, gt=0, description="How often closed windows are emitted.")
    batch_size: int = Field(default=1000, ge=1, description="Most audit records per batch.")
    batch_wait_s: float = Field(default=0.2, gt=0, description="Longest wait to fill a batch.")
    commit_interval_s: float = Field(
        default=0.5, gt=0,
        description="How often consumed offsets are committed: how far behind the group's lag "
        "may look, and how much a restart counts again (faust's default is 2.8 s).",
    )  # fmt: skip
    session_timeout_s: float = Field(
        default=10.0, gt=0, description="Consumer group session timeout (faust's)."
    )
    settle_s: float = Field(
        default=3.0, gt=0, description="How long a window's partials must stop coming before "
        "it is judged.",
    )  # fmt: skip
    label_memory: int = Field(
        default=100_000, ge=0, description="Hops per partition remembered for labels to join.",
    )  # fmt: skip
    metrics_host: str = Field(default="127.0.0.1", description="Where /metrics listens.")
    metrics_port: int = Field(default=0, ge=0, description="0: any free port.")
