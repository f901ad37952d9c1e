"""The page and the server's limits: a message over the owner's usage limit is refused and the
page says so, with when it resets; a connection that never spoke reconnects afresh (its session
was never stored)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.page.actions import answer_finished, open_and_connect, send, wait_for_status
from tests.page.conftest import PAGE_LOOP
from tests.page.cuttable_proxy import CuttableProxy, cuttable_proxy
from tests.support.server import RunningServer
from tests.support.waiting import wait_until

pytestmark = PAGE_LOOP


@pytest.fixture
def server(start_server: StartServer) -> RunningServer:
    # The fake's answers use more than one token: one answer uses up the day.
    return start_server(owner_tokens_per_day=1)


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(server: RunningServer) -> AsyncIterator[CuttableProxy]:
    """A cuttable proxy in front of `server`; list it before `page` so it outlives the page."""
    async with cuttable_proxy(server.port) as running:
        yield running


async def _tokens_used(server: RunningServer) -> int:
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, verify=False) as http:
        used: int = (await http.get("/api/usage")).json()["tokens_today"]["used"]
    return used


async def test_a_message_over_the_usage_limit_is_shown_as_refused(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("The only answer today."))
    await open_and_connect(page, server.http_url)
    await send(page, "First question")
    await answer_finished(page)

    async def counted() -> bool:
        return await _tokens_used(server) > 1

    await wait_until(counted, what="the answer's tokens to be counted")
    await send(page, "One more")
    error = page.get_by_test_id("error")
    await expect(error).to_have_attribute("data-code", "usage_limit_exceeded")
    await expect(error).to_contain_text("daily limit of 1 tokens")
    await expect(error).to_contain_text("resets at")
    refused = page.get_by_test_id("transcript").get_by_test_id("user-message").last
    await expect(refused).to_have_attribute("data-state", "failed")
    await expect(page.get_by_test_id("transcript")).to_contain_text("Not sent:")
    assert len(fake_groq.requests) == 1  # the refused message never reached the model


async def test_a_drop_before_the_first_message_reconnects_afresh_without_an_error(
    proxy: CuttableProxy, page: Page, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("Hello after the drop."))
    socket_urls: list[str] = []
    page.on("websocket", lambda socket: socket_urls.append(socket.url))
    await open_and_connect(page, proxy.http_url)
    proxy.cut()
    await wait_for_status(page, "reconnecting")
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    await send(page, "Still there?")
    answer = await answer_finished(page)
    await expect(answer).to_have_text("Hello after the drop.")
    await expect(page.get_by_test_id("error")).to_be_hidden()
    # The session that never spoke was never stored: the page did not ask to resume it.
    assert len(socket_urls) == 2, socket_urls
    assert "session_id=" not in socket_urls[1]
