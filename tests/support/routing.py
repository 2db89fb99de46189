"""Routing state a test sets directly, for routers tested apart from the control topic."""

from __future__ import annotations

from modelyard.control import ControlState, PipelineRouting, StageRouting

__all__ = ["StaticRouting"]


class StaticRouting:
    """A RoutingSource whose state the test replaces at will."""

    def __init__(self, pipeline: str, **stages: StageRouting) -> None:
        self.pipeline = pipeline
        self.state = ControlState()
        self.set(**stages)

    def set(self, **stages: StageRouting) -> None:
        routing = PipelineRouting(pipeline=self.pipeline, stages=stages)
        self.state = ControlState({self.pipeline: routing})
