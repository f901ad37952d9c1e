"""The token field of the page when the server's auth is on, in a real Chromium."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.page.actions import answer_finished, send
from tests.page.conftest import PAGE_LOOP

# How the page learns that auth is on (GET /api/sessions answers 401); Chromium logs it.
EXPECTED_401 = "the server responded with a status of 401"


pytestmark = PAGE_LOOP


async def test_token_field_appears_when_auth_is_on_and_the_token_is_used(
    page: Page, start_server: StartServer, fake_groq: FakeGroq, allowed_console_errors: list[str]
) -> None:
    allowed_console_errors.append(EXPECTED_401)
    server = start_server(auth_mode="api_key", api_keys="k1")
    fake_groq.script(text_reply("Hello, key holder."))
    await page.goto(server.http_url)
    token_form = page.get_by_test_id("token-form")
    await expect(token_form).to_be_visible()
    await page.get_by_test_id("token-input").fill("wrong")
    await page.get_by_test_id("token-save").click()
    await expect(page.get_by_test_id("error")).to_contain_text("not accepted")
    await page.get_by_test_id("token-input").fill("k1")
    await page.get_by_test_id("token-input").press("Enter")
    await expect(token_form).to_be_hidden()
    await expect(page.get_by_test_id("error")).to_be_hidden()
    await page.get_by_test_id("connect").click()
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    await send(page, "Hello")
    await answer_finished(page)
    # A reload keeps the token for this tab: the list loads without asking again.
    await page.reload()
    await expect(page.get_by_test_id("session-item")).to_have_count(1)
    await expect(token_form).to_be_hidden()


async def test_connecting_without_a_token_asks_for_one(
    page: Page, start_server: StartServer, allowed_console_errors: list[str]
) -> None:
    allowed_console_errors.append(EXPECTED_401)
    server = start_server(auth_mode="api_key", api_keys="k1")
    await page.goto(server.http_url)
    await page.get_by_test_id("connect").click()
    await expect(page.get_by_test_id("error")).to_be_visible()
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "disconnected")
    await expect(page.get_by_test_id("token-form")).to_be_visible()
