"""An MCP tool call on the page: a tool card like a built-in one, naming its server."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page, expect

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply, tool_call_reply
from tests.page.actions import answer_finished, open_and_connect, send
from tests.page.conftest import PAGE_LOOP
from tests.services.mcp.test_mcp_tools import wait_ready
from tests.support.mcp_servers import time_server, write_config
from tests.support.server import RunningServer

pytestmark = PAGE_LOOP


async def test_an_mcp_tool_card_shows_its_server(
    page: Page, start_server: StartServer, fake_groq: FakeGroq, tmp_path: Path
) -> None:
    mcp_server: RunningServer = start_server(
        mcp_config=write_config(tmp_path / "mcp.json", {"clock": time_server()})
    )
    await wait_ready(mcp_server, "clock")
    fake_groq.script(
        tool_call_reply(
            ("clock__get_current_time", {"timezone": "Asia/Tokyo"}),
            ("calculate", {"expression": "1 + 1"}),
        ),
        text_reply("It is late in Tokyo."),
    )
    await open_and_connect(page, mcp_server.http_url)
    await send(page, "What time is it in Tokyo?")
    await answer_finished(page)
    cards = page.get_by_test_id("transcript").get_by_test_id("tool-card")
    await expect(cards).to_have_count(2)
    mcp_card = cards.filter(has_text="clock__get_current_time")
    await expect(mcp_card).to_have_attribute("data-state", "ok")
    await expect(mcp_card.get_by_test_id("tool-server")).to_have_text("clock")
    await mcp_card.locator("summary").click()
    await expect(mcp_card).to_contain_text("Asia/Tokyo")
    # A built-in tool's card names no server.
    builtin_card = cards.filter(has_text="calculate")
    await expect(builtin_card.get_by_test_id("tool-server")).to_have_count(0)
