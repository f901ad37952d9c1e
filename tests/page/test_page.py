"""The conversation on the page, in a real Chromium, against a real server and the fake Groq."""

from __future__ import annotations

import os
import re
from pathlib import Path

from playwright.async_api import Page, expect

from app.routers.page import STATIC_DIR
from tests.fakes.groq_server import FakeGroq, hold_reply, text_reply, tool_call_reply
from tests.page.actions import (
    PROFILE_QUESTION,
    answer_finished,
    open_and_connect,
    send,
    wait_for_streaming_text,
)
from tests.page.conftest import PAGE_LOOP
from tests.support.server import RunningServer

pytestmark = PAGE_LOOP

# `UPDATE_SCREENSHOT=1 pytest tests/page -k seed_example` rewrites the README's screenshot.
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"
TOOL_DONE_WITH_DURATION = re.compile(r"^done · \d+(\.\d)? (ms|s)$")

MARKDOWN_ANSWER = """## Steps

1. Install it with `pip`:

```sh
pip install realtime <b>not html</b>
```

- **first** point
- *second* point, see [the docs](https://example.com/docs)
- [bad link](javascript:alert(1)) stays text
"""


async def test_seed_example_through_the_page(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "123"})),
        text_reply("User 123 is ", "**Ada Lovelace**", ", on the *pro* plan.", delay_s=0.2),
    )
    await open_and_connect(page, server.http_url)
    await expect(page.get_by_test_id("status")).to_contain_text("test-model")
    await send(page, PROFILE_QUESTION)
    transcript = page.get_by_test_id("transcript")
    await expect(transcript.get_by_test_id("user-message")).to_have_text(PROFILE_QUESTION)
    await wait_for_streaming_text(page, "User 123 is")
    card = transcript.get_by_test_id("tool-card")
    await expect(card).to_have_attribute("data-state", "ok")
    await expect(card.locator(".tool-state")).to_have_text(TOOL_DONE_WITH_DURATION)
    answer = await answer_finished(page)
    await expect(answer).to_have_text("User 123 is Ada Lovelace, on the pro plan.")
    await expect(answer.locator("strong")).to_have_text("Ada Lovelace")
    await expect(answer.locator("em")).to_have_text("pro")
    await expect(card.locator(".tool-body")).to_be_hidden()  # collapsed until opened
    await card.locator("summary").click()
    await expect(card).to_contain_text("Ada Lovelace")
    await expect(card).to_contain_text('"user_id": "123"')
    await expect(page.get_by_test_id("cancel")).to_be_disabled()
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        await page.screenshot(path=str(SCREENSHOT))


async def test_the_page_loads_every_script_module_of_its_own(
    page: Page, server: RunningServer
) -> None:
    # The script is ES modules under a CSP that allows only the page's own files: each module
    # must be reachable under /static, and none may be left out of the page (a console error
    # such as a blocked or missing module fails the test through the `page` fixture).
    await open_and_connect(page, server.http_url)
    loaded = await page.evaluate(
        "performance.getEntriesByType('resource').map((entry) => new URL(entry.name).pathname)"
    )
    modules = {f"/static/{path.name}" for path in STATIC_DIR.glob("*.js")}
    assert "/static/connection.js" in modules
    assert modules - set(loaded) == set()


async def test_cancel_stops_a_long_answer(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(hold_reply(*["word "] * 200, delay_s=0.05))
    await open_and_connect(page, server.http_url)
    await send(page, "Tell me a very long story.")
    await wait_for_streaming_text(page, "word word")
    cancel = page.get_by_test_id("cancel")
    await expect(cancel).to_be_enabled()
    await expect(page.get_by_test_id("send")).to_be_disabled()
    await cancel.click()
    answer = await answer_finished(page, "cancelled")
    await expect(answer).to_contain_text("Cancelled.")
    assert (await answer.inner_text()).count("word") < 200
    await expect(cancel).to_be_disabled()
    await expect(page.get_by_test_id("send")).to_be_enabled()


async def test_model_text_is_rendered_as_text_never_html(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    hostile = '<img src=x onerror="window.__owned=1"><script>window.__owned=2</script>'
    fake_groq.script(text_reply(hostile, " [click](javascript:window.__owned=3)"))
    await open_and_connect(page, server.http_url)
    await page.get_by_test_id("message-input").fill("<b>bold?</b>")
    await page.get_by_test_id("message-input").press("Enter")
    answer = await answer_finished(page)
    await expect(answer).to_contain_text(hostile)
    await expect(answer).to_contain_text("[click](javascript:window.__owned=3)")
    await expect(page.get_by_test_id("user-message")).to_have_text("<b>bold?</b>")
    transcript = page.get_by_test_id("transcript")
    for tag in ("img", "script", "b", "a"):
        assert await transcript.locator(tag).count() == 0, f"a <{tag}> element was rendered"
    assert await page.evaluate("window.__owned") is None


async def test_markdown_answer_renders_code_lists_and_safe_links(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    # Split at awkward places, so the page must render half-finished Markdown along the way.
    fake_groq.script(text_reply(*_chunks(MARKDOWN_ANSWER, 7), delay_s=0.005))
    await open_and_connect(page, server.http_url)
    await send(page, "How do I install it?")
    answer = await answer_finished(page)
    await expect(answer.locator("h2")).to_have_text("Steps")
    await expect(answer.locator("ol > li")).to_have_text("Install it with pip:")
    await expect(answer.locator("ol > li code")).to_have_text("pip")
    await expect(answer.locator("pre code")).to_have_text("pip install realtime <b>not html</b>")
    items = answer.locator("ul > li")
    await expect(items).to_have_count(3)
    await expect(items.nth(0).locator("strong")).to_have_text("first")
    await expect(items.nth(1).locator("em")).to_have_text("second")
    link = answer.locator("a")
    await expect(link).to_have_count(1)
    await expect(link).to_have_text("the docs")
    await expect(link).to_have_attribute("href", "https://example.com/docs")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")
    await expect(link).to_have_attribute("target", "_blank")
    await expect(items.nth(2)).to_have_text("[bad link](javascript:alert(1)) stays text")
    assert await answer.locator("b").count() == 0


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


async def test_keyboard_alone_connects_writes_lines_and_sends(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("Got both lines."))
    await page.goto(server.http_url)
    await _tab_to(page, "connect")
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    await _tab_to(page, "message-input")
    await page.keyboard.type("line one")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("line two")
    await expect(page.get_by_test_id("message-input")).to_have_value("line one\nline two")
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("user-message")).to_have_text("line one\nline two")
    await expect(page.get_by_test_id("message-input")).to_have_value("")
    await answer_finished(page)
    await expect(page.get_by_test_id("message-input")).to_be_focused()


async def _tab_to(page: Page, testid: str) -> None:
    """Press Tab until the element is focused, and check that its focus can be seen."""
    for _ in range(30):
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.dataset.testid || ''")
        if focused == testid:
            outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline != "none", f"{testid} has no visible focus"
            return
    raise AssertionError(f"Tab never reached {testid}")


async def test_phone_sized_screen_fits_and_works(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("A long answer " * 30, "`with_a_very_long_identifier_name()`"))
    await page.set_viewport_size({"width": 375, "height": 667})
    await open_and_connect(page, server.http_url)
    await send(page, "Hello from a phone")
    await answer_finished(page)
    for testid in ("status", "message-input", "send", "new-session", "connect"):
        await expect(page.get_by_test_id(testid)).to_be_in_viewport()
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
    await page.get_by_role("button", name="Hide").click()
    await expect(page.get_by_test_id("session-list")).to_be_hidden()
