"""PROTOCOL.md's WebSocket rules, each against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlencode

import orjson
import pytest

from app.settings import Settings
from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, Gate, gated_reply, hold_reply, text_reply
from tests.support.client import WsClient, types_of
from tests.support.server import RunningServer


async def _stored_types(server: RunningServer, session_id: str) -> list[str]:
    def read() -> list[str]:
        with server.db() as db:
            rows = db.execute(
                "select type from session_events where session_id = ? order by seq", (session_id,)
            ).fetchall()
        return [row["type"] for row in rows]

    return await asyncio.to_thread(read)


async def _wait_for_requests(fake: FakeGroq, n: int) -> None:
    await asyncio.to_thread(fake.wait_for_requests, n)


async def test_ping_gets_pong(server: RunningServer) -> None:
    async with server.connect() as client:
        await client.ready()
        await client.send({"type": "ping"})
        assert await client.recv() == {"type": "pong"}


async def test_message_during_a_response_is_refused_and_not_stored(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(hold_reply("a", "b", "c", delay_s=0.05))
    async with server.connect() as client:
        ready = await client.ready()
        await client.send({"type": "user.message", "text": "first", "id": "one"})
        await client.recv_until("response.started")
        await client.send({"type": "user.message", "text": "second", "id": "two"})
        frames = await client.recv_until("response.done")
    errors = [frame for frame in frames if frame["type"] == "error"]
    assert [error["code"] for error in errors] == ["response_in_progress"]
    assert frames[-1]["status"] == "completed"
    events = await _events(server, ready["session_id"])
    assert [e["text"] for e in events if e["type"] == "user.message"] == ["first"]


async def test_resent_id_is_acknowledged_again_without_a_second_response(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("only once"))
    async with server.connect() as client:
        await client.ready()
        first = await client.ask("hello", message_id="same")
        await client.send({"type": "user.message", "text": "hello", "id": "same"})
        again = await client.recv()
        await client.send({"type": "ping"})
        after = await client.recv()
    assert again == first[0]
    assert after == {"type": "pong"}  # no response.started came in between
    assert len(fake_groq.requests) == 1


async def test_resent_id_is_acknowledged_even_while_a_response_runs(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(hold_reply("x", "y", "z", delay_s=0.05))
    async with server.connect() as client:
        await client.ready()
        await client.send({"type": "user.message", "text": "hi", "id": "dup"})
        ack = await client.recv()
        await client.recv_until("response.started")
        await client.send({"type": "user.message", "text": "hi", "id": "dup"})
        frames = await client.recv_until("response.done")
    assert ack in frames
    assert not [frame for frame in frames if frame["type"] == "error"]


async def test_resent_id_after_reconnect_is_acknowledged_from_the_store(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("ok"))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        ack = (await client.ask("hello", message_id="retry-me"))[0]
    async with server.connect(f"session_id={session_id}") as client:
        await client.ready()
        await client.send({"type": "user.message", "text": "hello", "id": "retry-me"})
        assert await client.recv() == ack


async def test_cancel_while_idle_is_an_error(server: RunningServer) -> None:
    async with server.connect() as client:
        await client.ready()
        await client.send({"type": "response.cancel"})
        frame = await client.recv()
    assert frame["type"] == "error"
    assert frame["code"] == "no_active_response"


async def test_cancel_stops_the_stream_and_the_upstream(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(hold_reply(*[f"t{i} " for i in range(200)], delay_s=0.02))
    async with server.connect() as client:
        ready = await client.ready()
        await client.send({"type": "user.message", "text": "tell me a long story"})
        await client.recv_until("response.delta")
        await client.send({"type": "response.cancel"})
        frames = await client.recv_until("response.done")
        done = frames[-1]
        await asyncio.to_thread(fake_groq.wait_for_disconnect)
        # The session goes on after a cancel.
        fake_groq.script(text_reply("still here"))
        next_answer = await client.ask("are you there?")
    assert done["status"] == "cancelled"
    assert done["finish_reason"] == "cancelled"
    streamed = "".join(f["text"] for f in client.received if f["type"] == "response.delta")
    assert streamed.startswith("t0 ")
    assert done["text"] + "still here" == streamed
    assert next_answer[-1]["status"] == "completed"
    events = await _events(server, ready["session_id"])
    cancelled = next(e for e in events if e["type"] == "assistant.message")
    assert cancelled["status"] == "cancelled"
    assert cancelled["text"] == done["text"]
    assert cancelled["seq"] == done["seq"]


async def _events(server: RunningServer, session_id: str) -> list[dict[str, object]]:
    def read() -> list[dict[str, object]]:
        with server.db() as db:
            rows = db.execute(
                "select data from session_events where session_id = ? order by seq", (session_id,)
            ).fetchall()
        return [orjson.loads(row[0]) for row in rows]

    return await asyncio.to_thread(read)


async def test_resume_returns_stored_events_and_after_seq_filters_them(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("one"), text_reply("two"))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.ask("a")
        await client.ask("b")
    async with server.connect(f"session_id={session_id}") as client:
        everything = await client.ready()
    async with server.connect(f"session_id={session_id}&after_seq=2") as client:
        tail = await client.ready()
    assert everything["resumed"] is True
    assert everything["session_id"] == session_id
    assert [e["seq"] for e in everything["events"]] == [1, 2, 3, 4]
    assert [e["type"] for e in everything["events"]] == [
        "user.message",
        "assistant.message",
        "user.message",
        "assistant.message",
    ]
    assert [e["seq"] for e in tail["events"]] == [3, 4]
    assert tail["events"][1]["text"] == "two"


@pytest.mark.parametrize(
    "value",
    # Beyond the 64-bit seq range, and past the 4,300 digits that Python's int() refuses.
    ["-1", "abc", "1.5", "", "٣", str(2**63), "9" * 5000],
    ids=["negative", "letters", "decimal", "empty", "arabic-digit", "2**63", "5000-digits"],
)
async def test_bad_after_seq_is_invalid_request(server: RunningServer, value: str) -> None:
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
    async with server.connect(f"session_id={session_id}&after_seq={value}") as client:
        frame = await client.recv()
        code = await client.closed_with()
    assert frame["type"] == "error"
    assert frame["code"] == "invalid_request"
    assert code == 4400


@pytest.mark.parametrize(
    "session_id", ["3f1c2a9e-0000-4000-8000-000000000000", "not-a-uuid", "'; drop table x; --"]
)
async def test_unknown_session_is_not_found(server: RunningServer, session_id: str) -> None:
    async with server.connect(urlencode({"session_id": session_id})) as client:
        frame = await client.recv()
        code = await client.closed_with()
    assert frame["type"] == "error"
    assert frame["code"] == "session_not_found"
    assert code == 4404


async def test_second_live_connection_is_busy(server: RunningServer) -> None:
    async with server.connect() as first:
        session_id = (await first.ready())["session_id"]
        async with server.connect(f"session_id={session_id}") as second:
            frame = await second.recv()
            code = await second.closed_with()
        await first.send({"type": "ping"})
        still_open = await first.recv()
    assert frame["code"] == "session_busy"
    assert code == 4409
    assert still_open == {"type": "pong"}


async def test_reconnect_at_once_after_a_drop_is_not_busy(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.speak(lambda: fake_groq.script(text_reply("Hi.")))
    for _ in range(5):
        async with server.connect(f"session_id={session_id}") as client:
            assert (await client.ready())["session_id"] == session_id


async def test_disconnect_mid_response_lets_it_finish_and_resume_sees_it(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply("slow ", after=("but ", "complete"), gate=gate))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.send({"type": "user.message", "text": "go"})
        await client.recv_until("response.delta")
    # The resume joins the running response (PROTOCOL.md 1.1): its text so far, then the rest.
    async with server.connect(f"session_id={session_id}") as client:
        ready = await client.ready()
        gate.open()
        tail = await client.recv_until("response.done")
    deltas = "".join(f["text"] for f in tail if f["type"] == "response.delta")
    assert ready["live_response"]["text"] + deltas == tail[-1]["text"] == "slow but complete"
    assert tail[-1]["status"] == "completed"
    assert fake_groq.disconnects == 0


async def test_ack_comes_before_response_started(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("x"))
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("hi")
    assert types_of(frames)[:2] == ["user.message", "response.started"]


@pytest.mark.parametrize(
    "raw",
    [
        "[1, 2]",
        "{}",
        '{"type": 5}',
        '{"type": "nope"}',
        '{"type": "user.message"}',
        '{"type": "user.message", "text": 12}',
        '{"type": "user.message", "text": "hi", "id": 7}',
        '{"type": "user.message", "text": "hi", "id": "' + "x" * 65 + '"}',
        '"just a string"',
        '{"type": "user.message", "text": ""}',
        '{"type": "user.message", "text": "nul \\u0000 inside"}',
    ],
)
async def test_wrong_shape_is_invalid_event_and_keeps_the_connection(
    server: RunningServer, raw: str
) -> None:
    async with server.connect() as client:
        await client.ready()
        await client.send_raw(raw)
        frame = await client.recv()
        await client.send({"type": "ping"})
        pong = await client.recv()
    assert frame["type"] == "error"
    assert frame["code"] == "invalid_event"
    assert frame["retryable"] is False
    assert pong == {"type": "pong"}


@pytest.mark.parametrize("raw", ["{", "not json", '{"type": "ping"', "\x00"])
async def test_broken_json_is_invalid_json(server: RunningServer, raw: str) -> None:
    async with server.connect() as client:
        await client.ready()
        await client.send_raw(raw)
        frame = await client.recv()
        await client.send({"type": "ping"})
        pong = await client.recv()
    assert frame["code"] == "invalid_json"
    assert pong == {"type": "pong"}


async def test_binary_frame_is_invalid_event(server: RunningServer) -> None:
    async with server.connect() as client:
        await client.ready()
        await client.send_raw(b'{"type": "ping"}')
        frame = await client.recv()
        await client.send({"type": "ping"})
        pong = await client.recv()
    assert frame["code"] == "invalid_event"
    assert pong == {"type": "pong"}


async def test_binary_frames_do_not_use_up_the_rate_limit(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(max_messages_per_minute=5)
    fake_groq.script(text_reply("still heard"))
    async with server.connect() as client:
        await client.ready()
        for _ in range(10):
            await client.send_raw(b"\x00binary")
        refusals = [(await client.recv())["code"] for _ in range(10)]
        assert refusals == ["invalid_event"] * 10  # answered before the limiter, not counted
        frames = await client.ask("hello")
    assert types_of(frames)[0] == "user.message"
    assert frames[-1]["status"] == "completed"


async def test_binary_frame_over_ws_max_bytes_closes_with_1009(start_server: StartServer) -> None:
    server = start_server(ws_max_bytes=4096)
    async with server.connect() as client:
        await client.ready()
        await client.send_raw(b"x" * 5000)
        code = await client.closed_with()
    assert code == 1009


async def test_text_over_max_message_chars_is_refused_and_connection_stays(
    start_server: StartServer,
) -> None:
    server = start_server(max_message_chars=100)
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.send({"type": "user.message", "text": "é" * 101})
        frame = await client.recv()
        await client.send({"type": "ping"})
        pong = await client.recv()
    assert frame["code"] == "message_too_large"
    assert pong == {"type": "pong"}
    assert await _stored_types(server, session_id) == []


async def test_frame_over_ws_max_bytes_closes_with_1009(start_server: StartServer) -> None:
    server = start_server(ws_max_bytes=4096)
    async with server.connect() as client:
        await client.ready()
        await client.send({"type": "user.message", "text": "€" * 2000})  # 6000 bytes
        code = await client.closed_with()
    assert code == 1009


async def test_default_limits_follow_the_protocol(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    assert settings.max_message_chars == 32_000
    assert settings.ws_max_bytes == 1024 * 1024
    assert settings.max_messages_per_minute >= 60


async def test_foreign_browser_origin_is_forbidden(server: RunningServer) -> None:
    async with server.connect(origin="https://evil.example") as client:
        frame = await client.recv()
        code = await client.closed_with()
    assert frame["code"] == "forbidden"
    assert code == 4403


@pytest.mark.parametrize("origin", [None, "http://localhost:3000", "http://127.0.0.1:8000"])
async def test_local_or_absent_origin_is_allowed(server: RunningServer, origin: str | None) -> None:
    async with server.connect(origin=origin) as client:
        assert (await client.ready())["type"] == "session.ready"


async def test_same_origin_and_configured_origins_are_allowed(start_server: StartServer) -> None:
    server = start_server(allowed_origins="https://app.example.com")
    async with server.connect(origin="https://app.example.com") as client:
        assert (await client.ready())["type"] == "session.ready"
    same = f"http://127.0.0.1:{server.port}"
    async with server.connect(origin=same) as client:
        assert (await client.ready())["type"] == "session.ready"


async def test_flood_is_rate_limited_then_disconnected(start_server: StartServer) -> None:
    server = start_server(max_messages_per_minute=5)
    async with server.connect() as client:
        await client.ready()
        codes: list[str] = []
        for _ in range(5):
            await client.send({"type": "ping"})
            codes.append((await client.recv())["type"])
        await client.send({"type": "ping"})
        limited = await client.recv()
        for _ in range(40):
            await client.send({"type": "ping"})
        close_code = await client.closed_with()
    assert codes == ["pong"] * 5
    assert limited["code"] == "rate_limited"
    assert limited["retryable"] is True
    assert close_code == 1008


async def _refused(client: WsClient) -> tuple[str, int | None]:
    frame = await client.recv()
    return frame["code"], await client.closed_with()


async def test_api_key_auth_refuses_missing_or_wrong_tokens(start_server: StartServer) -> None:
    server = start_server(auth_mode="api_key", api_keys="key-one,key-two")
    async with server.connect() as client:
        assert await _refused(client) == ("unauthorized", 4401)
    async with server.connect("token=wrong") as client:
        assert await _refused(client) == ("unauthorized", 4401)
    async with server.connect("token=key-one") as client:
        assert (await client.ready())["type"] == "session.ready"
    headers = {"Authorization": "Bearer key-two"}
    async with server.connect(additional_headers=headers) as client:
        assert (await client.ready())["type"] == "session.ready"


async def test_another_owners_session_is_not_found(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(auth_mode="api_key", api_keys="alice-key,bob-key")
    async with server.connect("token=alice-key") as client:
        session_id = (await client.ready())["session_id"]
        await client.speak(lambda: fake_groq.script(text_reply("Hi Alice.")))
    async with server.connect(f"token=bob-key&session_id={session_id}") as client:
        assert await _refused(client) == ("session_not_found", 4404)
    async with server.connect(f"token=alice-key&session_id={session_id}") as client:
        assert (await client.ready())["resumed"] is True


async def test_another_owners_session_is_not_found_while_it_is_live(
    start_server: StartServer,
) -> None:
    server = start_server(auth_mode="api_key", api_keys="alice-key,bob-key")
    async with server.connect("token=alice-key") as alice:
        session_id = (await alice.ready())["session_id"]
        # Busy would tell bob the session exists; for him it does not.
        async with server.connect(f"token=bob-key&session_id={session_id}") as bob:
            assert await _refused(bob) == ("session_not_found", 4404)
        async with server.connect(f"token=alice-key&session_id={session_id}") as again:
            assert await _refused(again) == ("session_busy", 4409)
