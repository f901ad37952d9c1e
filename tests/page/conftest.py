"""A real Chromium (Debian's, through Playwright) for the page tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from tests.support.guard_plugin import NO_SKIPS
from tests.support.server import RunningServer

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _chromium_path() -> str | None:
    return (
        os.environ.get("CHROMIUM_PATH")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


# One browser for all page tests (starting Chromium takes longer than most tests); each test
# still gets a fresh context, so no state leaks between them. Test modules here run in the
# session's event loop for that (`pytestmark = PAGE_LOOP`).
PAGE_LOOP = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _chromium_path()
    if path is None:
        if NO_SKIPS:
            pytest.fail("Chromium is missing: scripts/test-services.sh installs Debian's chromium")
        pytest.skip("no Chromium here: apt-get install chromium (or set CHROMIUM_PATH)")
    return path


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        await browser.close()


@pytest.fixture
def allowed_console_errors() -> list[str]:
    """Console errors a test expects (substrings); it appends to this list and says why.

    Chromium logs every HTTP error answer as a console error, even an expected one, such as the
    401 by which the page learns that the server wants a token.
    """
    return []


@pytest_asyncio.fixture(loop_scope="session")
async def page(
    browser: Browser,
    server: RunningServer,
    allowed_console_errors: list[str],
    request: pytest.FixtureRequest,
) -> AsyncIterator[Page]:
    """A fresh page on `server` (closed before it stops); console errors fail the test; a failed
    test leaves a screenshot in test-artifacts/."""
    context = await browser.new_context(viewport={"width": 1100, "height": 800})
    page = await context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not any(
            allowed in message.text for allowed in allowed_console_errors
        ):
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    await context.close()
    assert errors == [], f"console errors on the page: {errors}"


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
