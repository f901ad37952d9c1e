"""The page while the store does not answer: a message it could not store is sent again by
itself, once the store is back, and answered once."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.page.actions import open_and_connect, send
from tests.page.conftest import PAGE_LOOP
from tests.support.server import RunningServer
from tests.support.stall import stalled

pytestmark = PAGE_LOOP


@pytest.fixture
def server(start_server: StartServer) -> RunningServer:
    return start_server(store_commit_timeout_s=0.5, database_timeout_s=1)


async def test_a_message_the_store_could_not_take_is_sent_again_by_itself(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.answer_model("test-model", text_reply("stored after all"))
    await open_and_connect(page, server.http_url)
    transcript = page.get_by_test_id("transcript")
    with stalled(server):
        await send(page, "hello during an outage")
        await expect(page.get_by_test_id("error")).to_have_attribute(
            "data-code", "store_unavailable"
        )
        await expect(transcript.get_by_test_id("user-message")).to_have_count(1)
    # The queued write lands at the writer's next try (at most 2 s apart), the page's resend at
    # its next try (1 s, 2 s, 4 s ... apart): allow for both.
    answer = page.get_by_test_id("transcript").get_by_test_id("assistant-message").last
    await expect(answer).to_have_attribute("data-state", "completed", timeout=20_000)
    await expect(answer).to_have_text("stored after all")
    await expect(transcript.get_by_test_id("user-message")).to_have_count(1)
    await expect(transcript.get_by_test_id("assistant-message")).to_have_count(1)
