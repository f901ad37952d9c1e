"""The browser page in a real Chromium, against a real server and the fake Groq."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.fakes.groq_server import FakeGroq, text_reply, tool_call_reply
from tests.support.server import RunningServer

PROFILE_QUESTION = "Can you fetch the profile for user 123?"


async def test_seed_example_through_the_page(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "123"})),
        text_reply("User 123 is ", "**Ada Lovelace**", ", on the pro plan."),
    )
    await page.goto(server.http_url)
    await page.get_by_test_id("connect").click()
    await expect(page.get_by_test_id("status")).to_contain_text("connected")
    await expect(page.get_by_test_id("status")).to_contain_text("test-model")
    await page.get_by_test_id("message-input").fill(PROFILE_QUESTION)
    await page.get_by_test_id("send").click()
    transcript = page.get_by_test_id("transcript")
    await expect(transcript.get_by_test_id("user-message")).to_contain_text(PROFILE_QUESTION)
    card = transcript.get_by_test_id("tool-card")
    await expect(card).to_contain_text("fetch_user_profile")
    await expect(card).to_have_attribute("data-state", "ok")
    answer = transcript.get_by_test_id("assistant-message").last
    await expect(answer).to_contain_text("User 123 is **Ada Lovelace**, on the pro plan.")
    await expect(answer).to_have_attribute("data-state", "completed")
    await card.locator("summary").click()
    await expect(card).to_contain_text("Ada Lovelace")
    await expect(card).to_contain_text('"user_id": "123"')


async def test_model_text_is_rendered_as_text_never_html(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    hostile = '<img src=x onerror="window.__owned=1"><script>window.__owned=2</script>'
    fake_groq.script(text_reply(hostile))
    await page.goto(server.http_url)
    await page.get_by_test_id("connect").click()
    await page.get_by_test_id("message-input").fill("<b>bold?</b>")
    await page.get_by_test_id("message-input").press("Enter")
    answer = page.get_by_test_id("assistant-message").last
    await expect(answer).to_have_attribute("data-state", "completed")
    await expect(answer).to_contain_text(hostile)
    await expect(page.get_by_test_id("user-message")).to_contain_text("<b>bold?</b>")
    assert await page.locator("[data-testid=transcript] img").count() == 0
    assert await page.locator("[data-testid=transcript] b").count() == 0
    assert await page.evaluate("window.__owned") is None
