"""The message bus between instances (Redis): the frames of each running response in a stream
of its own, so a resume on any instance can join it; cancels of joined clients by pub/sub.

What Redis holds (docs/deployment.md): per running response, one stream
`chat:response:{response_id}` (at most `REDIS_STREAM_MAXLEN` entries, deleted
`REDIS_STREAM_TTL_S` after the response ended) and one key `chat:live:{session_id}` naming it;
per remotely joined connection, one claim key `chat:join:{session_id}`; per cancel of a joined
client, one key `chat:cancel:{response_id}` (a minute). Nothing is only in
Redis: the store has every event, so whenever the bus fails a join waits for the stored result.

Publishing never slows a response: frames go into a bounded buffer, a service task writes them
in batches; when Redis is slow or down, frames that do not fit are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from app.protocol import ResponseDone, ResponseFrame, ResponseStarted, response_frame_adapter
from app.services.metrics import Metrics
from app.services.response_feed import LiveResponses, ResponseFeed

if TYPE_CHECKING:
    # Imported where a bus is made (`connect_redis`), never before: the `redis` package loads
    # the OpenTelemetry SDK at import, which an instance without REDIS_URL must not pay for.
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

CANCEL_CHANNEL = "chat:cancel"
# A running response's key lives this long at most (an instance killed mid-answer leaves it).
_LIVE_KEY_TTL_S = 3600
_BATCH_MAX = 500
# Pauses between attempts to subscribe again to the cancel channel while Redis is down.
_RESUBSCRIBE_FIRST_S = 0.5
_RESUBSCRIBE_MAX_S = 5.0
# A cancel is kept this long besides being published: a publish reaches only the instances
# subscribed at that moment, and one subscribing again after Redis restarted (a pause of at most
# `_RESUBSCRIBE_MAX_S`) reads the cancels of its responses from their keys.
_CANCEL_KEY_TTL_S = 60
_CONNECT_TIMEOUT_S = 1.0
# Above the longest blocking read (`follow`), so a blocked read is not cut as a timeout.
_SOCKET_TIMEOUT_S = 5.0


class BusUnavailable(Exception):
    """Redis did not answer; joins fall back to the stored result."""


class FramesMissing(BusUnavailable):
    """The stream does not hold the response from its start without gaps (Redis restarted,
    a publish was dropped, or the stream was trimmed): only the store has it whole."""


def stream_key(response_id: str) -> str:
    return f"chat:response:{response_id}"


def live_key(session_id: str) -> str:
    return f"chat:live:{session_id}"


def claim_key(session_id: str) -> str:
    return f"chat:join:{session_id}"


def cancel_key(response_id: str) -> str:
    return f"chat:cancel:{response_id}"


@dataclass(frozen=True, slots=True)
class BusEntry:
    """One frame of a response read from its stream: `index` counts from 0 without gaps."""

    entry_id: str
    index: int
    frame: ResponseFrame


def gapless(entries: Sequence[BusEntry], first: int) -> bool:
    """The entries are the frames numbered `first`, `first + 1`, ... with none missing."""
    return all(entry.index == first + n for n, entry in enumerate(entries))


@dataclass(slots=True)
class BusSubscription:
    """A response running on some instance, read from its stream: `so_far`, its frames from
    its start, and `rest()`, the ones that follow through `response.done`."""

    response_id: str
    so_far: list[ResponseFrame]
    bus: ResponseBus
    after: str
    next_index: int

    async def rest(self, *, block_ms: int = 1000) -> AsyncIterator[ResponseFrame]:
        """The frames after `so_far`, live. Raises `BusUnavailable` when Redis fails and
        `FramesMissing` at a gap; it waits as long as the response runs, so a caller bounds it
        (the instance running the response may die: its lease comes free)."""
        while True:
            entries = await self.bus.read(self.response_id, after=self.after, block_ms=block_ms)
            if not gapless(entries, self.next_index):
                raise FramesMissing(self.response_id)
            for entry in entries:
                self.next_index, self.after = entry.index + 1, entry.entry_id
                yield entry.frame
                if isinstance(entry.frame, ResponseDone):
                    return


@dataclass(frozen=True, slots=True)
class _Outgoing:
    session_id: str
    response_id: str
    index: int
    frame: ResponseFrame


def connect_redis(url: str) -> Redis:
    """A client that fails fast when Redis is down: one immediate retry, on a new connection
    (a pooled connection to a Redis that restarted fails once), then the caller falls back."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client: Redis = Redis.from_url(
        url,
        socket_connect_timeout=_CONNECT_TIMEOUT_S,
        socket_timeout=_SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 1),
    )
    return client


class ResponseBus:
    """Publishes this instance's running responses and reads other instances' ones."""

    def __init__(
        self,
        redis: Redis,
        metrics: Metrics,
        *,
        maxlen: int,
        ttl_s: float,
        buffer_max: int,
    ) -> None:
        from redis.exceptions import RedisError

        self._redis = redis
        self._metrics = metrics
        # What a call to Redis raises when Redis is down or slow.
        self._failures: tuple[type[Exception], ...] = (RedisError, OSError)
        self._maxlen = maxlen
        self._ttl_ms = int(ttl_s * 1000)
        self._outgoing: asyncio.Queue[_Outgoing] = asyncio.Queue(maxsize=buffer_max)
        self._failing = False
        self._subscribed = False

    async def aclose(self) -> None:
        await self._redis.aclose()

    # -- publishing (the instance that runs the response) ------------------------------------

    def offer(self, feed: ResponseFeed, index: int, frame: ResponseFrame) -> None:
        """A frame of a running response here: queued for Redis, or dropped when the buffer is
        full (never waited for)."""
        try:
            self._outgoing.put_nowait(_Outgoing(feed.session_id, feed.response_id, index, frame))
        except asyncio.QueueFull:
            self._metrics.bus_dropped_frames.inc()

    async def publish(self) -> None:
        """The publishing service: writes queued frames in batches, for ever."""
        while True:
            batch = [await self._outgoing.get()]
            while len(batch) < _BATCH_MAX and not self._outgoing.empty():
                batch.append(self._outgoing.get_nowait())
            await self._publish(batch)

    async def _publish(self, batch: list[_Outgoing]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        running: set[str] = set()
        for item in batch:
            key = stream_key(item.response_id)
            data = item.frame.__pydantic_serializer__.to_json(item.frame)
            pipe.xadd(key, {"i": item.index, "f": data}, maxlen=self._maxlen, approximate=True)
            running.add(key)
            if isinstance(item.frame, ResponseStarted):
                pipe.set(live_key(item.session_id), item.response_id, ex=_LIVE_KEY_TTL_S)
            elif isinstance(item.frame, ResponseDone):
                running.discard(key)
                pipe.pexpire(key, self._ttl_ms)
                pipe.delete(live_key(item.session_id))
        for key in running:
            # No stream outlives its response for long, even when its end was never published.
            pipe.expire(key, _LIVE_KEY_TTL_S)
        try:
            await pipe.execute()
        except self._failures as e:
            self._metrics.bus_dropped_frames.inc(len(batch))
            if not self._failing:
                log.warning("the message bus does not answer; joins elsewhere wait: %s", e)
            self._failing = True
            return
        if self._failing:
            log.info("the message bus answers again")
        self._failing = False

    async def listen_for_cancels(self, live: LiveResponses) -> None:
        """The cancel service: a client joined on another instance cancels a response here.
        Redis being down is not a failure of this instance (its `/readyz` stays ready): the
        listener subscribes again, with a growing pause, for ever."""
        pause_s = _RESUBSCRIBE_FIRST_S
        while True:
            try:
                await self._listen(live)
            except BusUnavailable as e:
                if pause_s == _RESUBSCRIBE_FIRST_S:
                    log.warning("cannot listen for cancels on the message bus: %s", e)
            pause_s = (
                _RESUBSCRIBE_FIRST_S if self._subscribed else min(pause_s * 2, _RESUBSCRIBE_MAX_S)
            )
            self._subscribed = False
            await asyncio.sleep(pause_s)

    async def _listen(self, live: LiveResponses) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(CANCEL_CHANNEL)
            self._subscribed = True
            await self._cancel_missed(live)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None and message["type"] == "message":
                    live.cancel(_text(message["data"]))
        except self._failures as e:
            raise BusUnavailable(str(e)) from e
        finally:
            with contextlib.suppress(*self._failures):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _cancel_missed(self, live: LiveResponses) -> None:
        """Cancel the responses here whose cancel was published while this instance was not
        subscribed (Redis restarted, the connection dropped): their keys still say so."""
        response_ids = live.response_ids()
        if not response_ids:
            return
        found = await self._redis.mget([cancel_key(r) for r in response_ids])
        for response_id, value in zip(response_ids, found, strict=True):
            if value is not None:
                live.cancel(response_id)

    # -- joining (an instance with the client's connection) --------------------------------

    async def running_response(self, session_id: str) -> str | None:
        """The id of the session's response running on some instance, if the bus knows one."""
        value = await self._call(self._redis.get(live_key(session_id)))
        return None if value is None else _text(value)

    async def subscribe(self, session_id: str) -> BusSubscription | None:
        """The session's response running on any instance, from its start (then live with
        `rest()`); None when none runs. Raises `BusUnavailable`, or `FramesMissing` when the
        stream cannot give the response whole (then wait for the stored result)."""
        response_id = await self.running_response(session_id)
        if response_id is None:
            return None
        entries = await self.read(response_id, after="0", block_ms=0)
        if not entries or not gapless(entries, 0):
            raise FramesMissing(response_id)
        frames = [entry.frame for entry in entries]
        return BusSubscription(response_id, frames, self, entries[-1].entry_id, len(entries))

    async def read(self, response_id: str, *, after: str, block_ms: int) -> list[BusEntry]:
        """The response's frames after entry `after` ("0" = from the start); waits at most
        `block_ms` for one (0 = do not wait)."""
        key = stream_key(response_id)
        if block_ms == 0:
            raw = await self._call(
                self._redis.xrange(key, min=f"({after}" if after != "0" else "-")
            )
            return [_entry(entry_id, fields) for entry_id, fields in raw]
        found = await self._call(self._redis.xread({key: after}, block=block_ms, count=_BATCH_MAX))
        return [_entry(i, fields) for _, entries in found or [] for i, fields in entries]

    async def cancel(self, response_id: str) -> None:
        """Ask whichever instance runs the response to cancel it: published, and kept in a key
        for an instance that is subscribing again just then (see `_cancel_missed`)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(cancel_key(response_id), 1, ex=_CANCEL_KEY_TTL_S)
        pipe.publish(CANCEL_CHANNEL, response_id)
        await self._call(pipe.execute())

    async def claim(self, session_id: str, token: str, *, ttl_s: float) -> bool:
        """Claim the session's remote join (one connection per session); False when taken."""
        taken = await self._call(
            self._redis.set(claim_key(session_id), token, nx=True, px=int(ttl_s * 1000))
        )
        return bool(taken)

    async def renew_claim(self, session_id: str, *, ttl_s: float) -> None:
        await self._call(self._redis.pexpire(claim_key(session_id), int(ttl_s * 1000)))

    async def release_claim(self, session_id: str, token: str) -> None:
        key = claim_key(session_id)
        if _text(await self._call(self._redis.get(key)) or b"") == token:
            await self._call(self._redis.delete(key))

    async def claimed(self, session_id: str) -> bool:
        """A client of another instance has joined the session's running response."""
        return bool(await self._call(self._redis.exists(claim_key(session_id))))

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except self._failures as e:
            raise BusUnavailable(str(e)) from e


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> BusEntry:
    frame = response_frame_adapter.validate_python(orjson.loads(fields[b"f"]))
    return BusEntry(_text(entry_id), int(fields[b"i"]), frame)
