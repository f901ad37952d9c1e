"""Past sessions, summaries and dropped connections on the page, in a real Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from playwright.async_api import Page, expect

from tests.conftest import BACKGROUND_SUMMARY, BACKGROUND_SUMMARY_MODEL
from tests.fakes.groq_server import (
    FakeGroq,
    Gate,
    gated_reply,
    hold_reply,
    text_reply,
    tool_call_reply,
)
from tests.page.actions import (
    PROFILE_QUESTION,
    answer_finished,
    open_and_connect,
    send,
    wait_for_status,
    wait_for_streaming_text,
    wait_for_text,
)
from tests.page.conftest import PAGE_LOOP
from tests.page.cuttable_proxy import CuttableProxy, cuttable_proxy
from tests.support.server import RunningServer

pytestmark = PAGE_LOOP

PROFILE_ANSWER = "User 123 is Ada Lovelace."


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(server: RunningServer) -> AsyncIterator[CuttableProxy]:
    """A cuttable proxy in front of `server`; list it before `page` so it outlives the page."""
    async with cuttable_proxy(server.port) as running:
        yield running


async def _have_the_profile_conversation(page: Page, fake_groq: FakeGroq) -> None:
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "123"})),
        text_reply(PROFILE_ANSWER),
    )
    await send(page, PROFILE_QUESTION)
    await answer_finished(page)


async def _expect_profile_transcript(page: Page) -> None:
    """The conversation is on screen exactly once, in order."""
    transcript = page.get_by_test_id("transcript")
    await expect(transcript.locator("> *")).to_have_count(3)
    await expect(transcript.get_by_test_id("user-message")).to_have_text(PROFILE_QUESTION)
    await expect(transcript.get_by_test_id("tool-card")).to_have_attribute("data-state", "ok")
    await expect(transcript.get_by_test_id("assistant-message")).to_have_text(PROFILE_ANSWER)
    testids = await transcript.locator("> *").evaluate_all(
        "(nodes) => nodes.map(n => n.dataset.testid)"
    )
    assert testids == ["user-message", "tool-card", "assistant-message"]


async def test_reload_then_resume_from_the_list_restores_the_transcript(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    await open_and_connect(page, server.http_url)
    await _have_the_profile_conversation(page, fake_groq)
    await page.reload()
    await expect(page.get_by_test_id("transcript").locator("> *")).to_have_count(0)
    item = page.get_by_test_id("session-item")
    await expect(item).to_have_count(1)
    await expect(item).to_contain_text("4 events")
    await item.click()
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    await expect(item).to_have_attribute("aria-current", "true")
    await _expect_profile_transcript(page)


async def test_summary_appears_in_the_list_after_leaving(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    # A summary that takes a moment, so the page has to look again to find it.
    summary_parts = BACKGROUND_SUMMARY.split(" ", 1)
    fake_groq.answer_model(
        BACKGROUND_SUMMARY_MODEL, text_reply(f"{summary_parts[0]} ", summary_parts[1], delay_s=0.4)
    )
    await open_and_connect(page, server.http_url)
    await _have_the_profile_conversation(page, fake_groq)
    await page.get_by_test_id("disconnect").click()
    left = page.get_by_test_id("session-item")
    await wait_for_text(page, "session-item", "summarizing…")
    await expect(left).to_contain_text(BACKGROUND_SUMMARY)
    await expect(left).to_contain_text("4 events")
    await expect(left.locator("time")).to_be_visible()


async def test_dropped_connection_reconnects_and_resumes_without_duplicates(
    proxy: CuttableProxy, page: Page, fake_groq: FakeGroq
) -> None:
    tokens = [f"part{i} " for i in range(30)]
    fake_groq.script(hold_reply(*tokens, delay_s=0.03), text_reply("Second answer."))
    socket_urls: list[str] = []
    page.on("websocket", lambda socket: socket_urls.append(socket.url))
    await open_and_connect(page, proxy.http_url)
    await send(page, "First question")
    await wait_for_streaming_text(page, "part2 ")
    proxy.cut()  # a real drop mid-answer: the server finishes and stores the answer anyway
    await wait_for_status(page, "reconnecting")
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    answer = await answer_finished(page)
    await expect(answer).to_have_text("".join(tokens).strip())
    await send(page, "Second question")
    await expect(page.get_by_test_id("assistant-message").last).to_have_text("Second answer.")
    await answer_finished(page)
    transcript = page.get_by_test_id("transcript")
    await expect(transcript.get_by_test_id("user-message")).to_have_text(
        ["First question", "Second question"]
    )
    await expect(transcript.get_by_test_id("assistant-message")).to_have_count(2)
    assert proxy.cuts == 1
    # The resume asked only for what came after the acknowledged question (seq 1).
    assert len(socket_urls) == 2, socket_urls
    assert "session_id=" in socket_urls[1]
    assert "after_seq=1" in socket_urls[1]
    await expect(page.get_by_test_id("error")).to_be_hidden()


async def test_reload_mid_answer_joins_it_live_and_shows_it_once(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply("The first half, ", after=("and the second.",), gate=gate))
    await open_and_connect(page, server.http_url)
    await send(page, "Tell me both halves.")
    await wait_for_streaming_text(page, "The first half,")
    await page.reload()
    item = page.get_by_test_id("session-item")
    await expect(item).to_have_count(1)
    await item.click()
    # Joined live: the text so far at once, still streaming, before the rest exists.
    await wait_for_streaming_text(page, "The first half,")
    await expect(page.get_by_test_id("cancel")).to_be_enabled()
    gate.open()
    answer = await answer_finished(page)
    transcript = page.get_by_test_id("transcript")
    await expect(answer).to_have_text("The first half, and the second.")
    await expect(transcript.get_by_test_id("assistant-message")).to_have_count(1)
    await expect(transcript.get_by_test_id("user-message")).to_have_text("Tell me both halves.")
