"""The test guards as a pytest plugin: installed for the whole run, checked after every test.

A test fails (at teardown, once every fixture of it has finished) when, during it, this process
or a server process it started tried a real network call, blocked an event loop, or left a task
pending: pending when its loop shut down (the test's own loop, a server's), or still pending on a
loop that outlives the test (a session-scoped one). `@pytest.mark.allow_leaked_tasks(reason=...)`
excuses the last, for a documented reason.

Where every test must run (CI, `make test`: `NO_SKIPS`), a skipped test fails too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path

import pytest

from tests.support import loop_guards, network_guard, violations
from tests.support.violations import Kind, Violation

# CI and `make test` run every test (REQUIRE_ALL_TESTS=1): there a test that lacks something on
# the machine fails instead of skipping. A plain local pytest run may skip, saying why.
NO_SKIPS = (
    os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    or os.environ.get("REQUIRE_ALL_TESTS") == "1"
)

_PENDING_BEFORE = pytest.StashKey[loop_guards.TaskSet]()
_CHILD_REPORTS = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_leaked_tasks(reason): this test may leave tasks pending; say why in `reason`",
    )
    network_guard.install()
    loop_guards.install()
    # Server processes report into this folder; `violations.take` reads it after each test.
    reports = Path(tempfile.mkdtemp(prefix="test-guards-"))
    config.stash[_CHILD_REPORTS] = reports
    violations.collect_children_into(reports)


def pytest_unconfigure(config: pytest.Config) -> None:
    violations.collect_children_into(None)
    shutil.rmtree(config.stash[_CHILD_REPORTS], ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    # Tasks pending now belong to fixtures set up before the test (a session's browser, say).
    item.stash[_PENDING_BEFORE] = loop_guards.pending_tasks()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        _fail_on_violations(item, _violations_of(item))


def _violations_of(item: pytest.Item) -> list[Violation]:
    seen = violations.take()
    pending_before = item.stash.get(_PENDING_BEFORE, None)
    if pending_before is not None:  # the test was called (its setup did not fail)
        seen += loop_guards.tasks_pending_since(pending_before)
    allowed = item.get_closest_marker("allow_leaked_tasks")
    if allowed is not None:
        if not allowed.kwargs.get("reason"):
            pytest.fail("@pytest.mark.allow_leaked_tasks needs a reason=...", pytrace=False)
        seen = [v for v in seen if v.kind is not Kind.LEAKED_TASK]
    return seen


def _fail_on_violations(item: pytest.Item, seen: list[Violation]) -> None:
    if seen:
        lines = "\n".join(f"  - {violation}" for violation in seen)
        pytest.fail(f"{item.nodeid}: the test guards caught\n{lines}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Where every test must run, any skip (one no fixture anticipated, too) is a failure."""
    report = yield
    if NO_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped where every test must run: {report.longrepr}"
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Violations after the last test (session fixtures' teardown) fail the run."""
    leftovers = violations.take()
    if not leftovers:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = "after the last test, the test guards caught:\n" + "\n".join(map(str, leftovers))
    if reporter is not None:
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
