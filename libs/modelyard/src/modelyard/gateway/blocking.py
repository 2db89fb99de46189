"""A synchronous face of :class:`PipelineGateway`, for CLIs and scripts.

It owns an event loop (``asyncio.Runner``) and runs each call on it, so several requests can
still be in flight at once (:meth:`BlockingGateway.submit_many`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from modelyard.auth import CallerKey
from modelyard.errors import ModelyardError
from modelyard.gateway.core import DEFAULT_TIMEOUT_S, PipelineGateway
from modelyard.telemetry.hooks import Carrier
from modelyard.wire import Envelope

__all__ = ["BlockingGateway", "Submission"]


@dataclass(frozen=True, slots=True)
class Submission:
    """One request of :meth:`BlockingGateway.submit_many`."""

    fields: Mapping[str, Any]
    request_id: str | None = None
    caller: str | None = None
    carrier: Carrier | None = None


class BlockingGateway:
    """``PipelineGateway`` with blocking calls; use as a context manager."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topic_prefix: str = "yard",
        kafka: Mapping[str, Any] | None = None,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = 10.0,
        signing_key: CallerKey | None = None,
    ) -> None:
        self._runner = asyncio.Runner()
        self.gateway = PipelineGateway(
            bootstrap,
            topic_prefix=topic_prefix,
            kafka=kafka,
            default_timeout_s=default_timeout_s,
            connect_timeout_s=connect_timeout_s,
            signing_key=signing_key,
        )
        try:
            self._runner.run(self.gateway.start())
        except BaseException:
            self._runner.close()
            raise

    def submit(self, pipeline: str, fields: Mapping[str, Any], **options: Any) -> Envelope:
        """:meth:`PipelineGateway.submit`, blocking."""
        return self._runner.run(self.gateway.submit(pipeline, fields, **options))

    def submit_many(
        self, pipeline: str, requests: Sequence[Submission], deadline_ms: int | None = None
    ) -> list[Envelope | ModelyardError]:
        """Submit all at once; each request's result, or the error that stopped its wait."""
        return self._runner.run(self._gather(pipeline, requests, deadline_ms))

    async def _gather(
        self, pipeline: str, requests: Sequence[Submission], deadline_ms: int | None
    ) -> list[Envelope | ModelyardError]:
        async def one(s: Submission) -> Envelope | ModelyardError:
            try:
                return await self.gateway.submit(
                    pipeline,
                    s.fields,
                    request_id=s.request_id,
                    caller=s.caller,
                    deadline_ms=deadline_ms,
                    carrier=s.carrier,
                )
            except ModelyardError as exc:
                return exc

        return list(await asyncio.gather(*(one(s) for s in requests)))

    def close(self) -> None:
        try:
            self._runner.run(self.gateway.close())
        finally:
            self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
