"""What Send does while an answer runs (protocol 1.1 `while_busy`), set in the page: wait
(the default), queue or interrupt; in a real Chromium against a real server and the fake Groq."""

from __future__ import annotations

from playwright.async_api import Locator, Page, expect

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, Gate, gated_reply, text_reply
from tests.page.actions import answer_finished, open_and_connect, send, wait_for_streaming_text
from tests.page.conftest import PAGE_LOOP
from tests.support.server import RunningServer

pytestmark = PAGE_LOOP


def transcript(page: Page) -> Locator:
    return page.get_by_test_id("transcript")


async def transcript_lines(page: Page) -> list[str]:
    """Each message of the transcript as `testid: state: text`, in order."""
    lines: list[str] = (
        await transcript(page)
        .locator("> [data-testid=user-message], > [data-testid=assistant-message]")
        .evaluate_all(
            """(nodes) => nodes.map((n) => `${n.dataset.testid}: ${n.dataset.state}: `
            + (n.querySelector('.msg-text') || n).textContent.trim())"""
        )
    )
    return lines


async def start_a_held_answer(page: Page, server: RunningServer, fake_groq: FakeGroq) -> Gate:
    """A first answer that streams "Working on it" and then waits at a gate."""
    gate = Gate()
    fake_groq.script(gated_reply("Working on it", after=(", done.",), gate=gate))
    await open_and_connect(page, server.http_url)
    await send(page, "First question")
    await wait_for_streaming_text(page, "Working on it")
    return gate


async def choose(page: Page, choice: str) -> None:
    await page.get_by_test_id("while-busy").select_option(choice)


async def test_by_default_send_waits_and_the_setting_persists(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    gate = await start_a_held_answer(page, server, fake_groq)
    setting = page.get_by_test_id("while-busy")
    await expect(setting).to_have_value("reject")
    await expect(page.get_by_test_id("send")).to_be_disabled()
    await choose(page, "enqueue")
    await expect(page.get_by_test_id("send")).to_be_enabled()
    gate.open()
    await answer_finished(page)
    await page.reload()
    await expect(page.get_by_test_id("while-busy")).to_have_value("enqueue")


async def test_queued_messages_are_marked_then_answered_in_order(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    gate = await start_a_held_answer(page, server, fake_groq)
    fake_groq.script(text_reply("Answer two."), text_reply("Answer three."))
    await choose(page, "enqueue")
    await send(page, "Second question")
    await send(page, "Third question")
    users = transcript(page).get_by_test_id("user-message")
    await expect(users.nth(1)).to_have_attribute("data-state", "queued")
    await expect(users.nth(2)).to_have_attribute("data-state", "queued")
    notes = transcript(page).get_by_test_id("queued-note")
    await expect(notes).to_have_count(2)
    await expect(notes.first).to_contain_text("Queued")
    # Still held: the first answer streams, nothing else has started.
    await expect(transcript(page).get_by_test_id("assistant-message")).to_have_count(1)
    gate.open()
    answers = transcript(page).get_by_test_id("assistant-message")
    await expect(answers).to_have_count(3)
    await expect(answers.nth(2)).to_have_attribute("data-state", "completed")
    await expect(notes).to_have_count(0)
    assert await transcript_lines(page) == [
        "user-message: sent: First question",
        "assistant-message: completed: Working on it, done.",
        "user-message: sent: Second question",
        "assistant-message: completed: Answer two.",
        "user-message: sent: Third question",
        "assistant-message: completed: Answer three.",
    ]
    # The model read each question after the answer to the one before it.
    last_request = fake_groq.requests[-1].body["messages"]
    assert [m["content"] for m in last_request if m["role"] != "system"] == [
        "First question",
        "Working on it, done.",
        "Second question",
        "Answer two.",
        "Third question",
    ]


async def test_a_full_queue_is_shown(
    page: Page, start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(max_queued_messages=1)
    gate = await start_a_held_answer(page, server, fake_groq)
    fake_groq.script(text_reply("Answer two."))
    await choose(page, "enqueue")
    await send(page, "Second question")
    await expect(transcript(page).get_by_test_id("queued-note")).to_have_count(1)
    await send(page, "Third question")
    third = transcript(page).get_by_test_id("user-message").nth(2)
    await expect(third).to_have_attribute("data-state", "failed")
    await expect(transcript(page).locator(".msg-note").last).to_contain_text("Not sent")
    await expect(page.get_by_test_id("error")).to_have_attribute("data-code", "queue_full")
    gate.open()
    await expect(transcript(page).get_by_test_id("assistant-message")).to_have_count(2)
    await answer_finished(page)


async def test_interrupt_cancels_the_answer_then_answers_the_new_message(
    page: Page, server: RunningServer, fake_groq: FakeGroq
) -> None:
    await start_a_held_answer(page, server, fake_groq)
    fake_groq.script(text_reply("Answer to the interruption."))
    await choose(page, "interrupt")
    await send(page, "Stop, do this instead")
    answers = transcript(page).get_by_test_id("assistant-message")
    await expect(answers).to_have_count(2)
    await expect(answers.first).to_have_attribute("data-state", "cancelled")
    await expect(answers.first).to_contain_text("Cancelled.")
    await answer_finished(page)
    assert await transcript_lines(page) == [
        "user-message: sent: First question",
        "assistant-message: cancelled: Working on it",
        "user-message: sent: Stop, do this instead",
        "assistant-message: completed: Answer to the interruption.",
    ]
