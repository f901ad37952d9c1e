"""The test guards catch what they promise (tests/support/guard_plugin.py).

Each test here provokes a mistake, checks that a guard recorded it, and takes the record away
(`violations.take`) so that the test itself passes; `test_the_guards_fail_the_test_at_teardown`
runs tests that do not take it, in a pytest of their own, and sees them fail.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from pathlib import Path

import pytest
from pydantic import JsonValue
from websockets.asyncio.client import connect

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply, tool_call_reply
from tests.support import loop_guards
from tests.support.client import WsClient
from tests.support.network_guard import RealNetworkCall
from tests.support.process import REPO_ROOT, ServerProcess
from tests.support.violations import Kind, take

# Not a loopback address; without the guard, whatever the machine's network does with it happens
# (a sandbox's proxy may even answer).
BEYOND_LOOPBACK_GROQ = "http://10.255.255.1:9/openai/v1"


def _burn_cpu(seconds: float) -> None:
    """Hold the CPU, as a callback doing heavy work on the loop would."""
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass


# ---------------------------------------------------------------------------------- network


async def test_a_server_calling_beyond_loopback_is_caught_though_the_app_swallows_it(
    start_server: StartServer,
) -> None:
    server = start_server(groq_base_url=BEYOND_LOOPBACK_GROQ)
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("hello")
    server.stop()  # its background summary tries the same upstream; stopped, it has tried
    caught = take(Kind.NETWORK)
    assert caught, "the guard missed the server's call"
    assert frames[-1]["error"]["code"] == "llm_unavailable"  # the app kept the error to itself
    assert all("10.255.255.1" in violation.detail for violation in caught)
    assert f"thread 'server-{server.port}'" in caught[0].where


async def test_a_server_process_calling_beyond_loopback_is_caught(
    tmp_path: Path, fake_groq: FakeGroq
) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "LLM_PROVIDER": "groq",
        "GROQ_API_KEY": "test-key",
        "GROQ_BASE_URL": BEYOND_LOOPBACK_GROQ,
        "LLM_MAX_RETRIES": "0",
        "LOG_LEVEL": "WARNING",
    }
    server = ServerProcess(env, tmp_path).start()
    try:
        async with connect(server.ws_url, open_timeout=5) as connection:
            client = WsClient(connection)
            await client.ready()
            frames = await client.ask("hello")
    finally:
        server.stop()
    caught = take(Kind.NETWORK)
    assert caught, "the guard missed the server process's call"
    assert frames[-1]["error"]["code"] == "llm_unavailable"
    assert "10.255.255.1" in caught[0].detail
    assert f"process {server.pid}" in caught[0].where


def test_a_name_lookup_beyond_this_machine_is_refused() -> None:
    with pytest.raises(RealNetworkCall):
        socket.getaddrinfo("api.groq.com", 443)
    [caught] = take(Kind.NETWORK)
    assert caught.detail.startswith("a DNS lookup of 'api.groq.com', from tests/test_guards.py:")
    assert caught.detail.endswith(" in test_a_name_lookup_beyond_this_machine_is_refused")


def test_loopback_and_local_names_pass() -> None:
    assert socket.getaddrinfo("localhost", 80)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        socket.create_connection(listener.getsockname(), timeout=1).close()
    assert take(Kind.NETWORK) == []


# ---------------------------------------------------------------------------- blocked loops


async def test_a_callback_holding_the_cpu_is_caught_and_named() -> None:
    async def crunch_numbers() -> None:
        _burn_cpu(0.15)

    await asyncio.create_task(crunch_numbers(), name="number-cruncher")
    caught = take(Kind.BLOCKED_LOOP)
    assert len(caught) == 1
    assert "task 'number-cruncher'" in caught[0].detail
    assert "crunch_numbers" in caught[0].detail


def test_time_off_the_cpu_does_not_count() -> None:
    # Asleep, or waiting for a CPU that other processes hold: the thread's CPU clock stands
    # still, so a loaded machine cannot fail a test.
    loop = asyncio.new_event_loop()
    try:
        loop.call_soon(time.sleep, 0.15)
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    assert take(Kind.BLOCKED_LOOP) == []


async def test_garbage_collection_and_first_imports_do_not_count(tmp_path: Path) -> None:
    (tmp_path / "slow_to_import.py").write_text(
        "from tests.test_guards import _burn_cpu\n_burn_cpu(0.15)\n"
    )

    async def collect_and_import() -> None:
        deadline = time.thread_time() + 0.15
        while time.thread_time() < deadline:
            gc.collect()
        __import__("slow_to_import")

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(tmp_path))
        await asyncio.create_task(collect_and_import())
    assert take(Kind.BLOCKED_LOOP) == []


# ----------------------------------------------------------------------------- leaked tasks


async def test_a_task_a_server_leaves_pending_is_caught_at_its_shutdown(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    forgotten: list[object] = []  # held, as ruff's RUF006 asks; never awaited

    async def start_a_chore() -> dict[str, JsonValue]:
        """Start work nobody waits for."""
        chore = asyncio.create_task(asyncio.Event().wait(), name="forgotten-chore")
        forgotten.append(chore)
        return {"started": True}

    server = start_server(tools=[start_a_chore])
    fake_groq.script(tool_call_reply(("start_a_chore", {})), text_reply("started"))
    async with server.connect() as client:
        await client.ready()
        await client.ask("start it")
    server.stop()
    caught = take(Kind.LEAKED_TASK)
    assert [v.detail.split(" (")[0] for v in caught] == ["'forgotten-chore'"]
    assert "pending at loop shutdown" in caught[0].detail
    assert f"thread 'server-{server.port}'" in caught[0].where


def test_a_task_pending_on_a_loop_that_outlives_the_test_is_caught() -> None:
    loop = asyncio.new_event_loop()
    before = loop_guards.pending_tasks()
    task = loop.create_task(asyncio.sleep(3600), name="still-sleeping")
    try:
        caught = loop_guards.tasks_pending_since(before)
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()
    assert [v.detail.split(" (")[0] for v in caught] == ["'still-sleeping'"]


# --------------------------------------------------------------------- failing at teardown

_PROVOKING_TESTS = """
import asyncio, socket, time

import pytest


def test_swallowed_network_call():
    try:
        socket.create_connection(("10.255.255.1", 9), timeout=1)
    except OSError:
        pass  # as a client library would, turning it into an error response


async def test_leaked_task():
    asyncio.create_task(asyncio.sleep(3600), name="left-behind")


async def test_blocking_callback():
    deadline = time.thread_time() + 0.15
    while time.thread_time() < deadline:
        pass


@pytest.mark.allow_leaked_tasks(reason="shows the marker")
async def test_excused_leak():
    asyncio.create_task(asyncio.sleep(3600), name="excused")


@pytest.mark.allow_leaked_tasks
async def test_excuse_without_a_reason():
    pass


async def test_clean():
    await asyncio.sleep(0)
"""


def _run_with_the_guards(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *options: str
) -> pytest.RunResult:
    """A pytest of its own, with only the guards and pytest-asyncio (others load slowly)."""
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins = ["-p", "tests.support.guard_plugin", "-p", "pytest_asyncio.plugin"]
    return pytester.runpytest_subprocess(*plugins, "-p", "no:cacheprovider", *options)


def test_the_guards_fail_the_test_at_teardown(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_provoking=_PROVOKING_TESTS)
    result = _run_with_the_guards(pytester, monkeypatch, "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=6, errors=4)
    result.stdout.fnmatch_lines_random(
        [
            "*ERROR at teardown of test_swallowed_network_call*",
            "*real network call: a connection to ('10.255.255.1', 9)*",
            "*ERROR at teardown of test_leaked_task*",
            "*task left pending: 'left-behind'*",
            "*ERROR at teardown of test_blocking_callback*",
            "*event loop blocked: a step of task*test_blocking_callback*",
            "*ERROR at teardown of test_excuse_without_a_reason*",
            "*allow_leaked_tasks needs a reason*",
        ]
    )
    assert "excused" not in result.stdout.str()


@pytest.mark.parametrize("require_all", [True, False])
def test_a_skip_fails_where_every_test_must_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, require_all: bool
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("REQUIRE_ALL_TESTS", "1" if require_all else "0")
    pytester.makepyfile(
        test_skipping="import pytest\n\ndef test_needs_a_widget():\n    pytest.skip('no widget')\n"
    )
    result = _run_with_the_guards(pytester, monkeypatch, "-rA")
    if require_all:
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*skipped where every test must run*no widget*"])
    else:
        result.assert_outcomes(skipped=1)
