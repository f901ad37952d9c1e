"""A state-machine test of tool approval and double texting (issue 15, item 3) against a real
server: random sequences of messages (`while_busy` reject / enqueue / interrupt), approval
answers (for pending, answered and unknown calls), cancels, disconnects with a resume and waits,
with the fake model answering in text, held text, calls that need approval, ordinary calls or a
mix of both. After each example: every request the fake received is one Groq accepts, the stored
history is whole and each message is answered once in order, and the frames kept the rules.

Driven by `st.data()` in an async test rather than `hypothesis.stateful`: the rules await a
WebSocket client and a server running in the test's own event loop, which the stateful API's
synchronous rules cannot do without a second loop per machine. Each step is `note`d, so a
failing example prints its sequence; the draws shrink as a state machine's would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.conftest import BACKGROUND_SUMMARY, BACKGROUND_SUMMARY_MODEL, StartServer
from tests.database.conftest import throwaway_database
from tests.fakes.groq_server import (
    FakeGroq,
    text_reply,
)
from tests.support.server import RunningServer
from tests.support.state_machine_driver import (
    LONG_APPROVAL_S,
    MAX_QUEUED,
    SHORT_APPROVAL_S,
    Driver,
)

# Each example is a new session on one of the test's two servers; ~25 examples of up to 14
# steps keep each test well under a minute.
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_STEPS = 14

REPLY_KINDS = ("text", "held", "approval", "approvals", "tool", "mix")
ACTIONS = (
    "send",
    "send",
    "send",
    "answer",
    "answer",
    "answer_other",
    "cancel",
    "release",
    "wait",
    "reconnect",
)


# -- the test ---------------------------------------------------------------------------------


@dataclass
class Servers:
    """One database, one fake model, and a server on it for each approval timeout."""

    fake: FakeGroq
    short_expiry: RunningServer
    long_expiry: RunningServer


@pytest.fixture
def own_fake() -> Iterator[FakeGroq]:
    """A fake whose script each example empties (examples script more than they are asked)."""
    with FakeGroq() as fake:
        fake.answer_model(BACKGROUND_SUMMARY_MODEL, text_reply(BACKGROUND_SUMMARY))
        yield fake


@pytest.fixture(params=["sqlite", "postgresql"])
def servers(
    request: pytest.FixtureRequest, start_server: StartServer, own_fake: FakeGroq
) -> Iterator[Servers]:
    def start(**store: Any) -> Servers:
        def server(approval_s: float) -> RunningServer:
            return start_server(
                groq_base_url=own_fake.base_url,
                tool_approval_timeout_s=approval_s,
                max_queued_messages=MAX_QUEUED,
                **store,
            )

        return Servers(own_fake, server(SHORT_APPROVAL_S), server(LONG_APPROVAL_S))

    if request.param == "sqlite":
        yield start()
        return
    for dsn in throwaway_database("statemachine"):
        yield start(database_url=dsn, database_pool_max=4)


@dataclass(frozen=True)
class Step:
    """Everything one step may use, drawn whatever the step turns out to be, so the draws
    never depend on what the server did (hypothesis replays them exactly)."""

    action: str
    while_busy: str
    replies: list[str]
    pick: int
    approved: bool
    reason: str | None
    after_last: bool
    release: bool


REPLY_PLANS = st.lists(st.sampled_from(REPLY_KINDS[2:]), max_size=2).flatmap(
    lambda tools: st.sampled_from(REPLY_KINDS[:2]).map(lambda last: [*tools, last])
)
STEPS = st.builds(
    Step,
    action=st.sampled_from(ACTIONS),
    while_busy=st.sampled_from(["reject", "enqueue", "enqueue", "interrupt"]),
    replies=REPLY_PLANS,
    pick=st.integers(min_value=0, max_value=7),
    approved=st.booleans(),
    reason=st.sampled_from([None, "not now"]),
    after_last=st.booleans(),
    release=st.booleans(),
)


async def run_step(driver: Driver, step: Step) -> None:
    await driver.drain()
    action = step.action
    if action == "reconnect" and not driver.session_id:
        action = "send"
    if action == "send":
        note(f"send while_busy={step.while_busy} replies={step.replies}")
        await driver.send(step.while_busy, step.replies)
    elif action in ("answer", "answer_other"):
        ids = sorted(driver.pending) if action == "answer" else sorted(driver.answered)
        call_id = ids[step.pick % len(ids)] if ids else "call-unknown"
        reason = None if step.approved else step.reason
        note(f"approval {call_id} approved={step.approved} reason={reason}")
        await driver.answer(call_id, approved=step.approved, reason=reason)
    elif action == "cancel":
        note("cancel")
        await driver.cancel()
    elif action == "release":
        note("release the held replies")
        driver.release()
    elif action == "wait":
        note("wait for the response to end")
        await driver.wait()
    else:
        note(f"disconnect, release={step.release}, resume after_last={step.after_last}")
        await driver.reconnect(after_last=step.after_last, release=step.release)


@EXAMPLES
@given(short_expiry=st.booleans(), steps=st.lists(STEPS, min_size=1, max_size=MAX_STEPS))
async def test_histories_stay_valid_under_random_frames(
    servers: Servers, short_expiry: bool, steps: list[Step]
) -> None:
    servers.fake.drop_script()
    server = servers.short_expiry if short_expiry else servers.long_expiry
    driver = Driver(server, servers.fake, short_expiry=short_expiry)
    try:
        await driver.connect()
        for step in steps:
            await run_step(driver, step)
        if driver.session_id:
            await driver.settle()
            await driver.check()
    finally:
        driver.release()
        await driver.close()
