"""The useChat example (examples/ai-sdk-react) in a real Chromium, against a real server and the
fake Groq, over each transport of the `ai` package: HTTP + SSE and the WebSocket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Locator, Page, WebSocket, expect

from tests.conftest import StartServer
from tests.fakes.groq_server import (
    FakeGroq,
    Gate,
    gated_reply,
    stream_error_reply,
    text_reply,
    tool_call_reply,
)
from tests.page.actions import PROFILE_QUESTION, send, wait_for_streaming_text
from tests.page.conftest import PAGE_LOOP
from tests.support.examples import require_ai_sdk_example
from tests.support.rest import get_events
from tests.support.server import RunningServer
from tests.support.waiting import wait_until

pytestmark = [PAGE_LOOP, pytest.mark.parametrize("transport", ["http", "ws"])]

EXAMPLE_PATH = "/examples/ai-sdk/"


@pytest.fixture(autouse=True)
def built_example() -> None:
    require_ai_sdk_example()


@pytest_asyncio.fixture(loop_scope="session")
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10, trust_env=False) as client:
        yield client


async def open_example(page: Page, url: str, transport: str) -> None:
    """Open the example at `url` and wait until useChat, resuming on mount, has asked the server
    for a running answer (`GET /api/chat/{id}/stream`, or a `resume` frame on the WebSocket)."""
    if transport == "http":
        async with page.expect_response(lambda response: response.url.endswith("/stream")):
            await page.goto(url)
        return
    async with page.expect_websocket() as socket_info:
        await page.goto(url)
    socket: WebSocket = await socket_info.value
    await socket.wait_for_event(
        "framereceived", predicate=lambda frame: '"requestId"' in str(frame)
    )


async def open_new_chat(page: Page, server: RunningServer, transport: str, query: str = "") -> str:
    """Open the example on a new chat; return the chat id it put into its URL."""
    url = f"{server.http_url}{EXAMPLE_PATH}?transport={transport}{query}"
    await open_example(page, url, transport)
    chat_ids = parse_qs(urlsplit(page.url).query)["chat"]
    assert len(chat_ids) == 1
    return chat_ids[0]


def answers(page: Page) -> Locator:
    return page.get_by_test_id("transcript").get_by_test_id("assistant-message")


async def answer_ended(page: Page, state: str = "completed") -> Locator:
    """Wait until the newest answer ends in `state`; return it."""
    answer = answers(page).last
    await expect(answer).to_have_attribute("data-state", state)
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "ready")
    return answer


async def stored_response_status(http: httpx.AsyncClient, response_id: str) -> str | None:
    """The status of the stored `assistant.message` of `response_id`, or None before it is
    stored (the example's only session on this server)."""
    sessions = (await http.get("/api/sessions")).json()["sessions"]
    assert len(sessions) == 1, sessions
    for event in await get_events(http, sessions[0]["id"]):
        if event["type"] == "assistant.message" and event["response_id"] == response_id:
            status: str = event["status"]
            return status
    return None


async def test_the_seed_example_shows_a_tool_card_then_the_answer(
    page: Page, server: RunningServer, fake_groq: FakeGroq, http: httpx.AsyncClient, transport: str
) -> None:
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "123"})),
        text_reply("User 123 is ", "Ada Lovelace, on the pro plan."),
    )
    chat_id = await open_new_chat(page, server, transport)
    await send(page, PROFILE_QUESTION)
    answer = await answer_ended(page)
    card = answer.get_by_test_id("tool-card")
    await expect(card).to_have_count(1)
    await expect(card.get_by_test_id("tool-name")).to_have_text("fetch_user_profile")
    await expect(card).to_have_attribute("data-state", "output-available")
    await expect(card.get_by_test_id("tool-input")).to_contain_text('"user_id": "123"')
    await expect(card.get_by_test_id("tool-output")).to_contain_text("Ada Lovelace")
    await expect(answer.get_by_test_id("text-part")).to_have_text(
        "User 123 is Ada Lovelace, on the pro plan."
    )
    await expect(page.get_by_test_id("user-message")).to_have_text(PROFILE_QUESTION)
    fake_groq.assert_complete()
    stored = (await http.get(f"/api/chat/{chat_id}/messages")).json()
    assert [message["role"] for message in stored] == ["user", "assistant"]
    # Reloaded, the page shows the same chat (its id is in the URL), from the server's store.
    await open_example(page, page.url, transport)
    answer = answers(page).last
    await expect(answers(page)).to_have_count(1)
    await expect(answer.get_by_test_id("tool-output")).to_contain_text("Ada Lovelace")
    await expect(answer.get_by_test_id("text-part")).to_have_text(
        "User 123 is Ada Lovelace, on the pro plan."
    )


async def test_a_failing_tool_shows_its_error_on_the_card(
    page: Page, server: RunningServer, fake_groq: FakeGroq, transport: str
) -> None:
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "nobody"})),
        text_reply("There is no such user."),
    )
    await open_new_chat(page, server, transport)
    await send(page, "Fetch the profile of user nobody.")
    answer = await answer_ended(page)
    card = answer.get_by_test_id("tool-card")
    await expect(card).to_have_attribute("data-state", "output-error")
    await expect(card.get_by_test_id("tool-error")).to_contain_text("no user with id 'nobody'")
    await expect(card.get_by_test_id("tool-output")).to_have_count(0)
    await expect(answer.get_by_test_id("text-part")).to_have_text("There is no such user.")


async def test_a_reload_mid_answer_resumes_it_and_shows_it_once(
    page: Page, server: RunningServer, fake_groq: FakeGroq, transport: str
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply("The first half, ", after=("and the second.",), gate=gate))
    await open_new_chat(page, server, transport)
    await send(page, "Tell me both halves.")
    await wait_for_streaming_text(page, "The first half,")
    await page.reload()
    # Resumed: the answer so far is replayed, still streaming, before the rest exists.
    await wait_for_streaming_text(page, "The first half,")
    await expect(page.get_by_test_id("stop")).to_be_enabled()
    gate.open()
    answer = await answer_ended(page)
    await expect(answer.get_by_test_id("text-part")).to_have_text("The first half, and the second.")
    await expect(answers(page)).to_have_count(1)
    await expect(page.get_by_test_id("user-message")).to_have_text("Tell me both halves.")


async def test_stop_mid_answer_cancels_it_on_the_server(
    page: Page,
    server: RunningServer,
    fake_groq: FakeGroq,
    http: httpx.AsyncClient,
    transport: str,
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply("The first half, ", after=("and the second.",), gate=gate))
    await open_new_chat(page, server, transport)
    await send(page, "Tell me both halves.")
    await wait_for_streaming_text(page, "The first half,")
    stop = page.get_by_test_id("stop")
    await stop.click()
    answer = await answer_ended(page, "stopped")
    await expect(answer).to_contain_text("Stopped.")
    await expect(stop).to_be_disabled()
    await expect(page.get_by_test_id("send")).to_be_enabled()
    response_id = await answer.get_attribute("data-message-id")
    assert response_id is not None
    assert response_id.startswith("resp_"), response_id

    async def stored_cancelled() -> bool:
        return await stored_response_status(http, response_id) == "cancelled"

    await wait_until(stored_cancelled, what=f"{response_id} stored as cancelled")

    # The server closed the model's stream, held at the gate: the rest never came.
    async def upstream_closed() -> bool:
        return fake_groq.disconnects == 1

    await wait_until(upstream_closed, what="the model's stream closed")
    await expect(answer.get_by_test_id("text-part")).to_have_text("The first half,")
    # Reloaded, the page shows the stored answer as stopped, from its metadata.
    await open_example(page, page.url, transport)
    answer = answers(page).last
    await expect(answer).to_have_attribute("data-state", "stopped")
    await expect(answer).to_have_attribute("data-message-id", response_id)
    await expect(answer.get_by_test_id("text-part")).to_have_text("The first half,")


async def test_an_upstream_error_mid_answer_shows_the_answer_failed(
    page: Page, server: RunningServer, fake_groq: FakeGroq, transport: str
) -> None:
    fake_groq.script(stream_error_reply("Half an ", message="the model fell over"))
    await open_new_chat(page, server, transport)
    await send(page, "Tell me something.")
    answer = answers(page).last
    await expect(answer).to_have_attribute("data-state", "failed")
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "error")
    # The `error` chunk's text, as useChat's `error`.
    await expect(page.get_by_test_id("error")).to_contain_text("the model fell over")
    await expect(answer.get_by_test_id("text-part")).to_have_text("Half an")
    # Reloaded, the stored answer says so itself.
    await open_example(page, page.url, transport)
    await expect(answers(page).last).to_have_attribute("data-state", "failed")
    await expect(answers(page).last.get_by_test_id("text-part")).to_have_text("Half an")


async def test_the_token_of_the_url_is_used_when_auth_is_on(
    page: Page,
    start_server: StartServer,
    fake_groq: FakeGroq,
    allowed_console_errors: list[str],
    transport: str,
) -> None:
    server = start_server(auth_mode="api_key", api_keys="k1")
    fake_groq.script(text_reply("Hello, key holder."))
    await open_new_chat(page, server, transport, "&token=k1")
    await send(page, "Hello")
    answer = await answer_ended(page)
    await expect(answer.get_by_test_id("text-part")).to_have_text("Hello, key holder.")
    # Without the token, the chat does not even load.
    allowed_console_errors.append("the server responded with a status of 401")
    await page.goto(f"{server.http_url}{EXAMPLE_PATH}?transport={transport}")
    await expect(page.get_by_test_id("error")).to_contain_text("HTTP 401")
    await expect(page.get_by_test_id("transcript")).to_have_count(0)
