"""In-memory stand-ins for the Kafka clients and the gRPC servicer context."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import grpc
from modelyard.gateway.servicer import ERROR_CODE_KEY

from tests.fuzz.framing import Message

__all__ = [
    "TOPIC",
    "Aborted",
    "FakeConsumer",
    "FakeContext",
    "FakeMessage",
    "FakeProducer",
    "Produced",
]

TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")  # a name Kafka would create a topic under


class FakeMessage:
    """What confluent_kafka hands a consumer, for one Message."""

    def __init__(self, topic: str, message: Message, offset: int = 0) -> None:
        self._topic, self._message, self._offset = topic, message, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._message.key

    def value(self) -> bytes | None:
        return self._message.value

    def headers(self) -> list[tuple[str, Any]] | None:
        return self._message.headers or None

    def error(self) -> None:
        return None


class Produced(NamedTuple):
    topic: str
    key: str | bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class FakeProducer:
    """Records what is produced and acknowledges it at once; refuses what the real client would
    (a key or header that is not encodable, a topic name Kafka would never create)."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        self.records: list[Produced] = []

    def produce(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> None:
        assert TOPIC.fullmatch(topic), f"produced to {topic!r}, not a Kafka topic name"
        assert isinstance(value, bytes), f"a value of type {type(value).__name__}"
        if isinstance(key, str):
            key.encode()  # what confluent_kafka does with a str key (raises on surrogates)
        headers = [(name, v.encode() if isinstance(v, str) else v) for name, v in kw["headers"]]
        assert all(isinstance(v, bytes) for _, v in headers), headers
        self.records.append(Produced(topic, key, value, headers))
        if kw.get("on_delivery") is not None:
            kw["on_delivery"](None, FakeMessage(topic, Message(None, value, [])))

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class FakeConsumer:
    def __init__(self, *_args: Any, **_kwargs: Any) -> None: ...

    def close(self) -> None: ...


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, trailing: Sequence[Any] = ()) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code, self.message, self.trailing = code, message, dict(trailing)

    @property
    def is_bug(self) -> bool:
        """What the servicers answer for an exception nobody foresaw (a ModelError is INTERNAL
        too, by policy, and fine: the stage's fault, said so)."""
        return (
            self.code == grpc.StatusCode.UNKNOWN
            or self.message.startswith("internal error (")
            or self.trailing.get(ERROR_CODE_KEY) == "internal"
        )


class FakeContext:
    """The parts of a ``grpc.aio.ServicerContext`` the servicers use."""

    def __init__(self, metadata: Sequence[tuple[str, Any]] = (), remaining: float | None = None):
        self._metadata, self._remaining = tuple(metadata), remaining

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return self._remaining

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[Any] = ()
    ) -> None:
        raise Aborted(code, details, trailing_metadata)
