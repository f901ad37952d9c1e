"""What a person does on the page, as steps the page tests share."""

from __future__ import annotations

from playwright.async_api import Locator, Page, expect

PROFILE_QUESTION = "Can you fetch the profile for user 123?"


async def open_and_connect(page: Page, url: str) -> None:
    """Load the page at `url`, press Connect and wait until it says connected."""
    await page.goto(url)
    await page.get_by_test_id("connect").click()
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")


async def send(page: Page, text: str) -> None:
    """Type `text` into the composer and press Send."""
    await page.get_by_test_id("message-input").fill(text)
    await page.get_by_test_id("send").click()


def last_answer(page: Page) -> Locator:
    """The newest assistant bubble."""
    return page.get_by_test_id("transcript").get_by_test_id("assistant-message").last


async def answer_finished(page: Page, state: str = "completed") -> Locator:
    """Wait until the newest answer ends with `state`; return its bubble."""
    answer = last_answer(page)
    await expect(answer).to_have_attribute("data-state", state)
    return answer


async def wait_for_streaming_text(page: Page, text: str) -> None:
    """Wait until the newest answer shows `text` while it is still streaming.

    Polled at every animation frame, so a short streaming window is not missed.
    """
    await page.wait_for_function(
        """(text) => {
            const answers = document.querySelectorAll('[data-testid="assistant-message"]');
            const answer = answers[answers.length - 1];
            return Boolean(answer) && answer.dataset.state === 'streaming'
                && answer.textContent.includes(text);
        }""",
        arg=text,
        polling="raf",
    )


async def wait_for_status(page: Page, state: str) -> None:
    """Wait until the connection state is `state`, checked at every animation frame (a brief
    state such as `reconnecting` is not missed)."""
    await page.wait_for_function(
        "(state) => document.querySelector('[data-testid=\"status\"]').dataset.state === state",
        arg=state,
        polling="raf",
    )


async def wait_for_text(page: Page, testid: str, text: str) -> None:
    """Wait until an element with `testid` shows `text`, checked at every animation frame (a
    passing state such as "summarizing…" is not missed)."""
    await page.wait_for_function(
        """([testid, text]) => Array.from(document.querySelectorAll(`[data-testid="${testid}"]`))
            .some((node) => node.textContent.includes(text))""",
        arg=[testid, text],
        polling="raf",
    )
