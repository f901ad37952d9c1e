"""The running responses of this process, frame by frame: what a joining client is sent.

A `ResponseFeed` keeps the frames of one running response so far and hands each new one to its
followers at once. `follow()` takes the snapshot and subscribes in one synchronous step, so a
follower sees every frame exactly once: those before in the snapshot, the rest live. This is
the service-level API for any transport that joins a running response (the WebSocket resume,
and an HTTP stream resume later).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable

from app.protocol import ResponseDelta, ResponseDone, ResponseFrame

log = logging.getLogger(__name__)

# Frames a follower may fall behind before it is dropped (it then falls back to the store).
FOLLOWER_LIMIT = 10_000


class FollowerOverflow(Exception):
    """A follower fell too far behind the response and was dropped."""


class FeedFollower:
    """The frames of one response after a snapshot, in order, until its `response.done`."""

    def __init__(self, feed: ResponseFeed, *, limit: int) -> None:
        self._feed = feed
        self._limit = limit
        self._queue: deque[ResponseFrame] = deque()
        self._wake = asyncio.Event()
        self.overflowed = False

    def offer(self, frame: ResponseFrame) -> None:
        """Called by the feed, never blocks: a follower that fell too far behind is dropped."""
        if len(self._queue) >= self._limit:
            self.overflowed = True
            self._feed.unfollow(self)
        else:
            self._queue.append(frame)
        self._wake.set()

    async def next_frame(self, timeout_s: float) -> ResponseFrame | None:
        """The next frame, or None when none came within `timeout_s`; `FollowerOverflow` if
        dropped. (For a reader that wants to wake up without a frame; else `frames()`.)"""
        if not self._queue and not self.overflowed:
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._wake.wait()
            except TimeoutError:
                return None
        if self._queue:
            return self._queue.popleft()
        raise FollowerOverflow(self._feed.response_id)

    def stop(self) -> None:
        """Follow no more."""
        self._feed.unfollow(self)

    async def frames(self) -> AsyncIterator[ResponseFrame]:
        """The frames as they come, through `response.done`; `FollowerOverflow` if dropped."""
        try:
            while True:
                while self._queue:
                    frame = self._queue.popleft()
                    yield frame
                    if isinstance(frame, ResponseDone):
                        return
                if self.overflowed:
                    raise FollowerOverflow(self._feed.response_id)
                self._wake.clear()
                await self._wake.wait()
        finally:
            self._feed.unfollow(self)


class ResponseFeed:
    """One running response's frames so far, and who follows the rest."""

    def __init__(
        self,
        session_id: str,
        response_id: str,
        *,
        cancel: Callable[[], None],
        on_frame: Callable[[ResponseFeed, int, ResponseFrame], None],
        on_end: Callable[[ResponseFeed], None],
    ) -> None:
        self.session_id = session_id
        self.response_id = response_id
        self.cancel = cancel
        self._on_frame = on_frame
        self._on_end = on_end
        self._frames: list[ResponseFrame] = []
        self._text: list[str] = []
        self._followers: set[FeedFollower] = set()

    @property
    def ended(self) -> bool:
        return bool(self._frames) and isinstance(self._frames[-1], ResponseDone)

    @property
    def text(self) -> str:
        """The answer text streamed so far."""
        return "".join(self._text)

    def add(self, frame: ResponseFrame) -> None:
        """A frame of this response is being sent: keep it, hand it on (never blocks)."""
        if self.ended:
            return
        self._frames.append(frame)
        if isinstance(frame, ResponseDelta):
            self._text.append(frame.text)
        for follower in list(self._followers):
            follower.offer(frame)
        self._on_frame(self, len(self._frames) - 1, frame)
        if isinstance(frame, ResponseDone):
            self._followers.clear()
            self._on_end(self)

    def frames(self) -> list[ResponseFrame]:
        """The frames so far, from `response.started`."""
        return list(self._frames)

    def follow(self, *, limit: int = FOLLOWER_LIMIT) -> tuple[list[ResponseFrame], FeedFollower]:
        """The frames so far and a follower of the rest, taken together (no frame in between)."""
        follower = FeedFollower(self, limit=limit)
        if not self.ended:
            self._followers.add(follower)
        return list(self._frames), follower

    def unfollow(self, follower: FeedFollower) -> None:
        self._followers.discard(follower)


FrameListener = Callable[[ResponseFeed, int, ResponseFrame], None]


class LiveResponses:
    """The running response of each session of this process, by session and response id."""

    def __init__(self) -> None:
        self._by_session: dict[str, ResponseFeed] = {}
        self._by_response: dict[str, ResponseFeed] = {}
        self._listeners: list[FrameListener] = []

    def add_listener(self, listener: FrameListener) -> None:
        """Hear every frame of every response (the message bus publishes them); must not block."""
        self._listeners.append(listener)

    def start(
        self, session_id: str, response_id: str, *, cancel: Callable[[], None]
    ) -> ResponseFeed:
        feed = ResponseFeed(
            session_id, response_id, cancel=cancel, on_frame=self._on_frame, on_end=self._end
        )
        self._by_session[session_id] = feed
        self._by_response[response_id] = feed
        return feed

    def of_session(self, session_id: str) -> ResponseFeed | None:
        """The session's running response here, if one runs."""
        return self._by_session.get(session_id)

    def response_ids(self) -> list[str]:
        """The ids of the responses running here."""
        return list(self._by_response)

    def cancel(self, response_id: str) -> bool:
        """Cancel a running response of this process (asked by a client joined elsewhere)."""
        feed = self._by_response.get(response_id)
        if feed is None:
            return False
        feed.cancel()
        return True

    def discard(self, feed: ResponseFeed) -> None:
        """The response's task ended (without its `response.done` if it crashed)."""
        self._end(feed)

    def _on_frame(self, feed: ResponseFeed, index: int, frame: ResponseFrame) -> None:
        for listener in self._listeners:
            try:
                listener(feed, index, frame)
            except Exception:
                # A listener's bug must never break the response it listens to.
                log.exception("a response frame listener failed")

    def _end(self, feed: ResponseFeed) -> None:
        if self._by_session.get(feed.session_id) is feed:
            del self._by_session[feed.session_id]
        self._by_response.pop(feed.response_id, None)
