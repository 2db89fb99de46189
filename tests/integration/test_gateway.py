"""PipelineGateway against a fake router on the real embedded broker (docs/router-api.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from modelyard.errors import DeadlineExceededError, UnavailableError, ValidationError
from modelyard.gateway import RESULT, STAGE, BlockingGateway, PipelineGateway, request_carrier
from modelyard.wire import CONTENT_TYPE_MSGPACK, Envelope, encode_envelope
from modelyard.wire.headers import H

from tests.support.fake_router import SERVED_BY, FakeRouter, running_fake_router

pytestmark = pytest.mark.integration

T = TypeVar("T")
PIPELINE = "echo"


@pytest.fixture
def router(broker: str, unique: str) -> Iterator[FakeRouter]:
    with running_fake_router(broker, unique, PIPELINE) as fake:
        yield fake


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


def gateway(router: FakeRouter, **options: Any) -> PipelineGateway:
    return PipelineGateway(router.bootstrap, topic_prefix=router.prefix, **options)


def texts(*items: bytes) -> dict[str, list[bytes]]:
    return {"text": list(items)}


def test_submit_returns_the_result_and_follows_the_contract(router: FakeRouter) -> None:
    carrier, trace_id = request_carrier()

    async def main() -> Envelope:
        async with gateway(router) as gw:
            return await gw.submit(
                PIPELINE, texts(b"hello", b"hi"), request_id="r-1", caller="alice", carrier=carrier
            )

    result = run(main())
    assert result.request_id == "r-1"
    assert result.error is None
    assert list(result.fields["upper"]) == [b"HELLO", b"HI"]
    assert list(result.fields["length"]) == [5, 2]
    assert result.served_by == SERVED_BY
    (seen,) = router.seen
    assert seen.envelope.pipeline == PIPELINE
    assert seen.envelope.caller == "alice"
    assert seen.envelope.deadline_ms is not None
    assert seen.envelope.deadline_ms > time.time() * 1000
    assert seen.headers[H.CONTENT_TYPE] == CONTENT_TYPE_MSGPACK
    assert seen.headers[H.REPLY_TO].startswith(f"{router.prefix}.gw.")
    assert seen.headers[H.TRACEPARENT].split("-")[1] == trace_id
    assert H.PROGRESS not in seen.headers


def test_stream_yields_each_stage_then_the_result(router: FakeRouter) -> None:
    async def main() -> list[tuple[str, Envelope]]:
        async with gateway(router) as gw:
            return [event async for event in gw.stream(PIPELINE, texts(b"abc"))]

    events = run(main())
    assert [(kind, env.stage) for kind, env in events] == [
        (STAGE, "upper"),
        (STAGE, "length"),
        (RESULT, None),
    ]
    assert (events[0][1].model, events[0][1].version) == ("upper", "1")
    assert list(events[-1][1].fields["length"]) == [3]
    assert router.seen[0].headers[H.PROGRESS] == "1"


def test_many_concurrent_submits_are_matched_by_request_id(router: FakeRouter) -> None:
    words = [f"word-{k}-{'x' * (k % 7)}".encode() for k in range(200)]

    async def main() -> list[Envelope]:
        async with gateway(router) as gw:
            results = await asyncio.gather(*(gw.submit(PIPELINE, texts(w)) for w in words))
            assert gw.in_flight == 0
            return results

    results = run(main())
    assert [list(r.fields["upper"]) for r in results] == [[w.upper()] for w in words]
    assert len({r.request_id for r in results}) == len(words)


def test_no_result_in_time_is_a_deadline_error(router: FakeRouter) -> None:
    async def main() -> None:
        async with gateway(router, reply_grace_s=0.05) as gw:
            deadline = int(time.time() * 1000) + 100
            with pytest.raises(DeadlineExceededError, match="no result for request"):
                await gw.submit(PIPELINE, texts(b"silent"), deadline_ms=deadline)
            with pytest.raises(DeadlineExceededError):
                async for _ in gw.stream(PIPELINE, texts(b"silent"), deadline_ms=deadline):
                    pass
            assert gw.in_flight == 0
            # the gateway is still usable after a timeout
            assert (await gw.submit(PIPELINE, texts(b"ok"))).error is None

    run(main())


def test_a_failed_request_is_a_result_with_its_error(router: FakeRouter) -> None:
    async def main() -> Envelope:
        async with gateway(router) as gw:
            return await gw.submit(PIPELINE, texts(b"boom"))

    result = run(main())
    assert result.error is not None
    assert (result.error.code, result.error.stage) == ("model", "length")
    assert result.served_by == SERVED_BY


def test_replies_nobody_waits_for_are_dropped(router: FakeRouter) -> None:
    async def main() -> Envelope:
        async with gateway(router) as gw:
            stray = Producer({"bootstrap.servers": router.bootstrap})
            for value in (encode_envelope(Envelope("nobody")), b"not msgpack"):
                stray.produce(gw.reply_topic, value, "nobody", headers=[(H.EVENT, b"result")])
            stray.flush(10)
            return await gw.submit(PIPELINE, texts(b"after"))

    assert list(run(main()).fields["upper"]) == [b"AFTER"]


def test_bad_requests_are_refused_before_sending(router: FakeRouter) -> None:
    async def main() -> None:
        async with gateway(router) as gw:
            with pytest.raises(ValidationError, match="pipeline name"):
                await gw.submit("no.dots", texts(b"x"))
            with pytest.raises(ValidationError, match="already in flight"):
                await asyncio.gather(
                    gw.submit(PIPELINE, texts(b"a"), request_id="same"),
                    gw.submit(PIPELINE, texts(b"b"), request_id="same"),
                )

    run(main())


def test_blocking_gateway_submits_many_at_once(router: FakeRouter) -> None:
    from modelyard.gateway import Submission  # noqa: PLC0415

    with BlockingGateway(router.bootstrap, topic_prefix=router.prefix) as gw:
        one = gw.submit(PIPELINE, texts(b"one"))
        many = gw.submit_many(PIPELINE, [Submission(texts(w)) for w in (b"a", b"bb", b"ccc")])
    assert list(one.fields["upper"]) == [b"ONE"]
    assert [list(r.fields["length"]) for r in many if isinstance(r, Envelope)] == [[1], [2], [3]]


def test_its_own_reply_topic_is_deleted_on_close_a_given_one_kept(router: FakeRouter) -> None:
    given = f"{router.prefix}.my-replies"

    async def main() -> tuple[str, str]:
        async with gateway(router) as own, gateway(router, reply_topic=given) as kept:
            for gw in (own, kept):
                assert (await gw.submit(PIPELINE, texts(b"x"))).error is None
            return own.reply_topic, kept.reply_topic

    own_topic, kept_topic = run(main())
    topics = AdminClient({"bootstrap.servers": router.bootstrap}).list_topics(timeout=10).topics
    assert own_topic not in topics
    assert kept_topic == given
    assert given in topics


def test_an_undeliverable_request_fails_at_once_as_unavailable(router: FakeRouter) -> None:
    async def main() -> None:
        replies = f"{router.prefix}.replies"
        async with gateway(router, reply_topic=replies) as gw:
            gw.topic_prefix = "no$such$prefix"  # an ingress topic name the broker refuses
            with pytest.raises(UnavailableError, match="not delivered"):
                await gw.submit(PIPELINE, texts(b"x"), deadline_ms=int(time.time() * 1000) + 60_000)
            assert gw.in_flight == 0

    run(main())
