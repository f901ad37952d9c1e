"""Tool approval on the page (protocol 1.1): the approval card of a call that needs the person's
answer, in a real Chromium, against a real server and the fake Groq."""

from __future__ import annotations

import re

from playwright.async_api import Locator, Page, WebSocketRoute, expect

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply, tool_call_reply
from tests.page.actions import answer_finished, open_and_connect, send
from tests.page.conftest import PAGE_LOOP
from tests.support.server import RunningServer

pytestmark = PAGE_LOOP

PLAN_CHANGE = ("update_user_plan", {"user_id": "123", "plan": "team"})
PLAN_QUESTION = "Move user 123 to the team plan."


def tool_card(page: Page) -> Locator:
    return page.get_by_test_id("transcript").get_by_test_id("tool-card")


async def awaiting_card(page: Page) -> Locator:
    """The plan change's card once it asks for approval: name, arguments and buttons shown."""
    card = tool_card(page)
    await expect(card).to_have_attribute("data-state", "awaiting-approval")
    await expect(card.locator(".tool-name")).to_have_text("update_user_plan")
    await expect(card.locator(".tool-args")).to_be_visible()
    await expect(card.locator(".tool-args")).to_contain_text('"plan": "team"')
    await expect(card.get_by_test_id("approval-status")).to_have_text("Needs your approval")
    await expect(card.get_by_test_id("approve")).to_be_enabled()
    await expect(card.get_by_test_id("deny")).to_be_enabled()
    return card


async def test_approve_from_the_card_runs_the_tool(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(tool_call_reply(PLAN_CHANGE), text_reply("User 123 is on team now."))
    await open_and_connect(page, server.http_url)
    await send(page, PLAN_QUESTION)
    card = await awaiting_card(page)
    # The default timeout is 600 s: the time left starts near 10:00.
    await expect(card.get_by_test_id("approval-countdown")).to_have_text(
        re.compile(r"^(10:00|9:5\d) left$")
    )
    await expect(page.get_by_test_id("send")).to_be_disabled()  # the answer is in progress
    await card.get_by_test_id("approve").click()
    await expect(card.get_by_test_id("approval-status")).to_have_text("Approved")
    await expect(card.get_by_test_id("approve")).to_be_hidden()
    await expect(card.get_by_test_id("approval-countdown")).to_have_text("")
    await expect(card).to_have_attribute("data-state", "ok")
    await expect(card.locator(".tool-result")).to_contain_text('"previous_plan": "pro"')
    answer = await answer_finished(page)
    await expect(answer).to_have_text("User 123 is on team now.")
    tool_message = fake_groq.requests[1].body["messages"][-1]
    assert tool_message["role"] == "tool"
    assert '"plan": "team"' in tool_message["content"] or '"plan":"team"' in tool_message["content"]


async def test_deny_with_a_reason(page: Page, server: RunningServer, fake_groq: FakeGroq) -> None:
    fake_groq.script(tool_call_reply(PLAN_CHANGE), text_reply("Understood, I left the plan."))
    await open_and_connect(page, server.http_url)
    await send(page, PLAN_QUESTION)
    card = await awaiting_card(page)
    await card.get_by_test_id("approval-reason").fill("not before Monday")
    await card.get_by_test_id("deny").click()
    await expect(card.get_by_test_id("approval-status")).to_have_text("Denied: not before Monday")
    await expect(card.get_by_test_id("deny")).to_be_hidden()
    await expect(card).to_have_attribute("data-state", "failed")
    await expect(card.locator(".tool-error")).to_have_text("denied by the user: not before Monday")
    await answer_finished(page)
    tool_message = fake_groq.requests[1].body["messages"][-1]
    assert "not before Monday" in tool_message["content"]


async def test_the_countdown_runs_and_an_expired_call_shows_it(
    page: Page, start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(tool_approval_timeout_s=4.0)
    fake_groq.script(tool_call_reply(PLAN_CHANGE), text_reply("Nobody answered; nothing changed."))
    await open_and_connect(page, server.http_url)
    await send(page, PLAN_QUESTION)
    card = await awaiting_card(page)
    countdown = card.get_by_test_id("approval-countdown")
    await expect(countdown).to_have_text(re.compile(r"^0:0[34] left$"))
    await expect(countdown).to_have_text(re.compile(r"^0:0[12] left$"))
    await expect(card.get_by_test_id("approval-status")).to_have_text(
        "Expired: not answered in time"
    )
    await expect(card.get_by_test_id("approve")).to_be_hidden()
    await expect(card.locator(".tool-error")).to_have_text("approval timed out")
    await answer_finished(page)


async def test_a_reload_while_pending_shows_working_buttons(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(tool_call_reply(PLAN_CHANGE), text_reply("Done after the reload."))
    await open_and_connect(page, server.http_url)
    await send(page, PLAN_QUESTION)
    await awaiting_card(page)
    await page.reload()
    item = page.get_by_test_id("session-item")
    await expect(item).to_have_count(1)
    await item.click()
    # From session.ready: the stored request, its call id in `pending_approvals`.
    card = await awaiting_card(page)
    await expect(card.get_by_test_id("approval-countdown")).to_have_text(re.compile(r" left$"))
    await card.get_by_test_id("approve").click()
    await expect(card.get_by_test_id("approval-status")).to_have_text("Approved")
    await expect(card).to_have_attribute("data-state", "ok")
    answer = await answer_finished(page)
    await expect(answer).to_have_text("Done after the reload.")
    await expect(tool_card(page)).to_have_count(1)

    # Answered: after another reload the card shows the outcome, and no buttons.
    await page.reload()
    await page.get_by_test_id("session-item").click()
    card = tool_card(page)
    await expect(card.get_by_test_id("approval-status")).to_have_text("Approved")
    await expect(card.get_by_test_id("approve")).to_be_hidden()
    await expect(card).to_have_attribute("data-state", "ok")


async def test_an_answer_the_server_refuses_is_explained_on_the_card(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(tool_call_reply(PLAN_CHANGE))

    # The page's answer names a call that does not wait: the server answers
    # approval_not_pending, as for one answered elsewhere or expired a moment before.
    def rewrite(message: str | bytes) -> str | bytes:
        if isinstance(message, str) and '"tool.approval"' in message:
            return message.replace('"call_id":"', '"call_id":"gone-')
        return message

    def route(ws: WebSocketRoute) -> None:
        server_ws = ws.connect_to_server()
        ws.on_message(lambda message: server_ws.send(rewrite(message)))

    await page.route_web_socket(re.compile(r"/ws"), route)
    await open_and_connect(page, server.http_url)
    await send(page, PLAN_QUESTION)
    card = await awaiting_card(page)
    await card.get_by_test_id("approve").click()
    status = card.get_by_test_id("approval-status")
    await expect(status).to_contain_text("not waiting for an answer any more")
    await expect(card.get_by_test_id("approval")).to_have_attribute("data-refused", "true")
    await expect(page.get_by_test_id("error")).to_be_hidden()
    # Cancel ends the paused answer (the call stays unanswered).
    await page.get_by_test_id("cancel").click()
    await answer_finished(page, "cancelled")
    await expect(card.locator(".tool-error")).to_have_text("cancelled")
