"""The running responses of a process, as a joining transport uses them: the frames so far and
a follower of the rest, taken in one step; a follower that falls too far behind is dropped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.protocol import (
    ResponseDelta,
    ResponseDone,
    ResponseFrame,
    ResponseStarted,
    ResponseStatus,
)
from app.services.response_feed import FeedFollower, FollowerOverflow, LiveResponses

RESPONSE = "resp_1"


def _delta(text: str) -> ResponseDelta:
    return ResponseDelta(response_id=RESPONSE, text=text)


def _done(text: str) -> ResponseDone:
    return ResponseDone(
        seq=2,
        response_id=RESPONSE,
        status=ResponseStatus.COMPLETED,
        text=text,
        finish_reason="stop",
        usage=None,
    )


async def _drain(follower: FeedFollower) -> list[ResponseFrame]:
    return [frame async for frame in follower.frames()]


async def test_a_follower_gets_every_frame_once_in_the_snapshot_or_live() -> None:
    live = LiveResponses()
    published: list[tuple[int, str]] = []
    live.add_listener(lambda feed, index, frame: published.append((index, frame.type)))
    feed = live.start("s1", RESPONSE, cancel=lambda: None)
    feed.add(ResponseStarted(response_id=RESPONSE))
    feed.add(_delta("Hel"))
    so_far, follower = feed.follow()
    feed.add(_delta("lo"))
    feed.add(_done("Hello"))
    rest = await _drain(follower)
    assert [f.type for f in so_far] == ["response.started", "response.delta"]
    assert [f.type for f in rest] == ["response.delta", "response.done"]
    assert feed.text == "Hello"
    assert published == [(0, "response.started"), (1, "response.delta"), (2, "response.delta"),
                         (3, "response.done")]  # fmt: skip
    # Ended: the session has no running response any more.
    assert live.of_session("s1") is None


async def test_a_follower_that_falls_behind_is_dropped_not_waited_for() -> None:
    live = LiveResponses()
    feed = live.start("s1", RESPONSE, cancel=lambda: None)
    _, follower = feed.follow(limit=2)
    for text in ("a", "b", "c"):
        feed.add(_delta(text))  # never blocks, whoever follows
    with pytest.raises(FollowerOverflow):
        await _drain(follower)
    assert feed.text == "abc"


async def test_a_cancel_by_response_id_reaches_the_running_response() -> None:
    live = LiveResponses()
    cancelled: list[datetime] = []
    live.start("s1", RESPONSE, cancel=lambda: cancelled.append(datetime.now(UTC)))
    assert live.cancel(RESPONSE) is True
    assert live.cancel("resp_unknown") is False
    assert len(cancelled) == 1
