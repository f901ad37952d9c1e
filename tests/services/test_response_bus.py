"""The message bus on a real Redis: what one instance publishes of a running response, another
subscribes to from its start and follows live; a stream with a frame missing is refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio

from app.protocol import ResponseDelta, ResponseDone, ResponseStarted, ResponseStatus
from app.services.metrics import Metrics
from app.services.response_bus import (
    FramesMissing,
    ResponseBus,
    connect_redis,
    live_key,
    stream_key,
)
from app.services.response_feed import LiveResponses, ResponseFeed
from tests.support.private_redis import shared_redis_url
from tests.support.waiting import wait_until


def _bus(*, buffer_max: int = 100, maxlen: int = 1000) -> ResponseBus:
    redis = connect_redis(shared_redis_url())
    return ResponseBus(redis, Metrics(), maxlen=maxlen, ttl_s=5, buffer_max=buffer_max)


@pytest_asyncio.fixture
async def reader() -> AsyncIterator[ResponseBus]:
    bus = _bus()
    yield bus
    await bus.aclose()


async def _publishing(bus: ResponseBus, live: LiveResponses) -> asyncio.Task[None]:
    live.add_listener(bus.offer)
    return asyncio.create_task(bus.publish(), name="publisher")


async def _stop(task: asyncio.Task[None], bus: ResponseBus) -> None:
    task.cancel()
    await asyncio.wait([task])
    await bus.aclose()


def _done(feed: ResponseFeed, text: str) -> ResponseDone:
    return ResponseDone(
        seq=2,
        response_id=feed.response_id,
        status=ResponseStatus.COMPLETED,
        text=text,
        finish_reason="stop",
        usage=None,
    )


async def _published(reader: ResponseBus, session_id: str, frames: int) -> None:
    async def there() -> bool:
        subscription = await reader.subscribe(session_id)
        return subscription is not None and len(subscription.so_far) >= frames

    await wait_until(there, what=f"{frames} frames on the bus")


async def test_a_subscriber_gets_the_frames_so_far_then_the_rest_live(
    reader: ResponseBus,
) -> None:
    live, writer = LiveResponses(), _bus()
    publisher = await _publishing(writer, live)
    session_id, response_id = str(uuid.uuid4()), f"resp_{uuid.uuid4().hex}"
    try:
        feed = live.start(session_id, response_id, cancel=lambda: None)
        feed.add(ResponseStarted(response_id=response_id))
        feed.add(ResponseDelta(response_id=response_id, text="Hel"))
        await _published(reader, session_id, 2)
        subscription = await reader.subscribe(session_id)
        assert subscription is not None
        feed.add(ResponseDelta(response_id=response_id, text="lo"))
        feed.add(_done(feed, "Hello"))
        rest = [frame async for frame in subscription.rest(block_ms=100)]
    finally:
        await _stop(publisher, writer)
    assert [f.type for f in subscription.so_far] == ["response.started", "response.delta"]
    assert [f.type for f in rest] == ["response.delta", "response.done"]
    # Ended: the session has no running response on the bus any more.
    assert await reader.subscribe(session_id) is None


async def test_a_stream_missing_a_frame_is_refused_for_the_stored_result(
    reader: ResponseBus,
) -> None:
    # A buffer of two frames: the third, offered before the publisher runs, is dropped.
    live, writer = LiveResponses(), _bus(buffer_max=2)
    publisher = await _publishing(writer, live)
    session_id, response_id = str(uuid.uuid4()), f"resp_{uuid.uuid4().hex}"
    try:
        feed = live.start(session_id, response_id, cancel=lambda: None)
        feed.add(ResponseStarted(response_id=response_id))
        for text in ("a", "b", "c"):
            feed.add(ResponseDelta(response_id=response_id, text=text))
        await _published(reader, session_id, 2)
        feed.add(ResponseDelta(response_id=response_id, text="d"))
        await wait_until(lambda: _has_gap(reader, session_id), what="the frame after the gap")
    finally:
        await _stop(publisher, writer)


async def _has_gap(reader: ResponseBus, session_id: str) -> bool:
    try:
        await reader.subscribe(session_id)
    except FramesMissing:
        return True
    return False


async def test_offering_never_waits_even_with_no_room_and_no_publisher() -> None:
    bus = _bus(buffer_max=1)
    live = LiveResponses()
    live.add_listener(bus.offer)
    feed = live.start("s", "resp_x", cancel=lambda: None)
    for n in range(1000):  # no publisher runs at all: every frame past the first is dropped
        feed.add(ResponseDelta(response_id="resp_x", text=str(n)))
    await bus.aclose()
    assert feed.text == "".join(str(n) for n in range(1000))


async def test_a_stream_is_bounded_and_expires_after_its_response_ended() -> None:
    live, writer = LiveResponses(), _bus(buffer_max=2000, maxlen=100)
    publisher = await _publishing(writer, live)
    redis = connect_redis(shared_redis_url())
    session_id, response_id = str(uuid.uuid4()), f"resp_{uuid.uuid4().hex}"
    key = stream_key(response_id)
    try:
        feed = live.start(session_id, response_id, cancel=lambda: None)
        feed.add(ResponseStarted(response_id=response_id))
        for n in range(1000):
            feed.add(ResponseDelta(response_id=response_id, text=str(n)))

        async def all_published() -> bool:
            entries = await writer.read(response_id, after="0", block_ms=0)
            return bool(entries) and entries[-1].index == 1000

        await wait_until(all_published, what="the 1000th delta on the bus")
        running = (
            await redis.xlen(key),
            await redis.ttl(key),
            await redis.ttl(live_key(session_id)),
        )
        feed.add(_done(feed, feed.text))

        async def ended() -> bool:
            return not await redis.exists(live_key(session_id))

        await wait_until(ended, what="the end of the response on the bus")
        after_end = (await redis.xlen(key), await redis.pttl(key))
    finally:
        await _stop(publisher, writer)
        await redis.delete(key, live_key(session_id))
        await redis.aclose()
    length, stream_ttl_s, live_ttl_s = running
    # Trimmed approximately: whole nodes of 100 entries (stream-node-max-entries) at a time.
    assert 100 <= length <= 200
    # A running response's stream and key outlive a dead publisher by an hour at most.
    assert 0 < stream_ttl_s <= 3600
    assert 0 < live_ttl_s <= 3600
    # Ended: the stream stays `ttl_s` (5 s), no longer.
    assert 100 <= after_end[0] <= 201
    assert 0 < after_end[1] <= 5000


async def test_a_cancel_published_before_the_running_instance_subscribed_still_reaches_it(
    reader: ResponseBus,
) -> None:
    # As after a Redis restart: the running instance subscribes again after a pause, and a
    # publish reaches only the instances subscribed at that moment.
    live, running = LiveResponses(), _bus()
    cancelled = asyncio.Event()
    response_id = f"resp_{uuid.uuid4().hex}"
    live.start(str(uuid.uuid4()), response_id, cancel=cancelled.set)
    await reader.cancel(response_id)  # from the instance of the joined client
    listener = asyncio.create_task(running.listen_for_cancels(live), name="cancels")
    try:
        async with asyncio.timeout(5):
            await cancelled.wait()
    finally:
        await _stop(listener, running)
