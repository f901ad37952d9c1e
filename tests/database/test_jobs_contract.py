"""The job claims' contract (summaries and titles), on SQLite, PostgreSQL and Supabase.

A job is claimed by one claimant at a time with a token; every later write of its outcome names
the token, so a claimant whose claim was taken over (presumed dead) or reset (the session
changed) cannot overwrite the newer outcome. `stale_after_s=-1` makes a fresh claim stale and
`retry_in_s=-1` makes a failed job due at once: no test waits for a clock.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from app.database.base import JobClaim, JobKind, SessionRecord, Store
from app.protocol import SummaryStatus
from tests.database.builders import (
    assistant_message,
    created,
    leased,
    rows_of,
    session_record,
    user_message,
)

KINDS: list[JobKind] = ["summary", "title"]
FRESH = 60.0  # a claim younger than this is not stale
STALE = -1.0  # every claim is older than this


async def fetched(store: Store, session_id: str) -> SessionRecord:
    record = await store.sessions.get(session_id)
    assert record is not None
    return record


async def claimed(
    store: Store, session_id: str, kind: JobKind = "summary", *, claimant: str = "a"
) -> JobClaim:
    claim = await store.jobs.claim(session_id, kind, claimant=claimant, stale_after_s=FRESH)
    assert claim is not None
    return claim


async def taken_over(store: Store, session_id: str, kind: JobKind, *, claimant: str) -> JobClaim:
    claim = await store.jobs.claim(session_id, kind, claimant=claimant, stale_after_s=STALE)
    assert claim is not None
    return claim


async def requested(store: Store) -> SessionRecord:
    """A session whose summary is pending."""
    record = await created(store)
    await store.jobs.request_summary(record.id)
    return record


async def finish(claim: JobClaim, store: Store, *, upto_seq: int = 2) -> bool:
    """Finish a job of either kind."""
    if claim.kind == "summary":
        return await store.jobs.finish_summary(claim, summary="done", upto_seq=upto_seq)
    return await store.jobs.finish_title(claim, "Named")


async def with_events(store: Store, record: SessionRecord, count: int) -> None:
    """`count` events written by a holding that then ends (the client left)."""
    lease = await leased(store, record.id)
    events = [
        user_message(seq, "q") if seq % 2 else assistant_message(seq, "a")
        for seq in range(1, count + 1)
    ]
    await store.events.append(rows_of(lease, *events))
    await store.leases.release(lease)


async def summarized(store: Store, record: SessionRecord, *, upto_seq: int) -> None:
    await store.jobs.request_summary(record.id)
    assert await store.jobs.finish_summary(
        await claimed(store, record.id), summary="s", upto_seq=upto_seq
    )


# ---------------------------------------------------------------- summaries


async def test_a_new_session_has_no_summary_job(store: Store) -> None:
    record = await created(store)
    assert (await fetched(store, record.id)).summary_status is SummaryStatus.NONE
    assert await store.jobs.summaries_due(stale_after_s=FRESH) == []
    assert await store.jobs.claim(record.id, "summary", claimant="a", stale_after_s=FRESH) is None


async def test_a_requested_summary_is_pending_and_due(store: Store) -> None:
    record = await requested(store)
    assert (await fetched(store, record.id)).summary_status is SummaryStatus.PENDING
    assert await store.jobs.summaries_due(stale_after_s=FRESH) == [record.id]


async def test_a_summary_is_claimed_once_while_its_claim_is_fresh(store: Store) -> None:
    record = await requested(store)
    claim = await claimed(store, record.id)
    assert (claim.session_id, claim.kind, claim.attempts) == (record.id, "summary", 0)
    assert (await fetched(store, record.id)).summary_status is SummaryStatus.RUNNING
    assert await store.jobs.claim(record.id, "summary", claimant="b", stale_after_s=FRESH) is None
    assert await store.jobs.summaries_due(stale_after_s=FRESH) == []


async def test_a_stale_summary_claim_is_due_and_taken_over(store: Store) -> None:
    record = await requested(store)
    first = await claimed(store, record.id, claimant="a")
    assert await store.jobs.summaries_due(stale_after_s=STALE) == [record.id]
    second = await taken_over(store, record.id, "summary", claimant="b")
    assert second.token != first.token


async def test_no_claim_for_an_unknown_or_malformed_session(store: Store) -> None:
    for session_id in (str(uuid.uuid4()), "not-a-uuid"):
        for kind in KINDS:
            assert (
                await store.jobs.claim(session_id, kind, claimant="a", stale_after_s=STALE) is None
            )
    await store.jobs.request_summary(str(uuid.uuid4()))  # nothing to mark: no error
    await store.jobs.request_summary("not-a-uuid")
    assert await store.jobs.summaries_due(stale_after_s=STALE) == []


async def test_a_finished_summary_is_done_and_visible_on_the_session(store: Store) -> None:
    record = await requested(store)
    claim = await claimed(store, record.id)
    assert await store.jobs.finish_summary(claim, summary="They talked.", upto_seq=7)
    done = await fetched(store, record.id)
    assert (done.summary_status, done.summary, done.summary_seq) == (
        SummaryStatus.DONE,
        "They talked.",
        7,
    )
    assert await store.jobs.summaries_due(stale_after_s=STALE) == []
    assert await store.jobs.claim(record.id, "summary", claimant="b", stale_after_s=STALE) is None


async def test_a_finished_claim_cannot_finish_again(store: Store) -> None:
    record = await requested(store)
    claim = await claimed(store, record.id)
    assert await store.jobs.finish_summary(claim, summary="first", upto_seq=2)
    assert not await store.jobs.finish_summary(claim, summary="again", upto_seq=3)
    done = await fetched(store, record.id)
    assert (done.summary, done.summary_seq) == ("first", 2)


async def test_finish_summary_never_moves_the_summary_backwards(store: Store) -> None:
    record = await requested(store)
    assert await store.jobs.finish_summary(
        await claimed(store, record.id), summary="up to 5", upto_seq=5
    )
    await store.jobs.request_summary(record.id)
    behind = await claimed(store, record.id)
    assert not await store.jobs.finish_summary(behind, summary="up to 3", upto_seq=3)
    after = await fetched(store, record.id)
    assert (after.summary, after.summary_seq) == ("up to 5", 5)
    assert await store.jobs.finish_summary(behind, summary="up to 5 again", upto_seq=5)
    assert (await fetched(store, record.id)).summary == "up to 5 again"


async def test_a_request_while_a_claim_runs_invalidates_that_claim(store: Store) -> None:
    record = await requested(store)
    outdated = await claimed(store, record.id, claimant="a")
    await store.jobs.request_summary(record.id)  # the session changed meanwhile
    assert not await store.jobs.finish_summary(outdated, summary="old", upto_seq=2)
    after = await fetched(store, record.id)
    assert (after.summary_status, after.summary) == (SummaryStatus.PENDING, None)
    current = await claimed(store, record.id, claimant="b")
    assert await store.jobs.finish_summary(current, summary="new", upto_seq=3)
    assert (await fetched(store, record.id)).summary == "new"


# ---------------------------------------------------------------- fencing (both kinds)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_claim_taken_over_cannot_finish(store: Store, kind: JobKind) -> None:
    record = await created(store)
    await store.jobs.request_summary(record.id)
    first = await claimed(store, record.id, kind, claimant="a")
    second = await taken_over(store, record.id, kind, claimant="b")
    assert not await finish(first, store)
    after = await fetched(store, record.id)
    assert (after.summary, after.title) == (None, None)
    assert await finish(second, store)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_claim_taken_over_cannot_fail_or_hand_back(store: Store, kind: JobKind) -> None:
    record = await created(store)
    await store.jobs.request_summary(record.id)
    first = await claimed(store, record.id, kind, claimant="a")
    second = await taken_over(store, record.id, kind, claimant="b")
    await store.jobs.fail(first, retry_in_s=STALE)
    await store.jobs.hand_back(first)
    # Still b's running job: not due while fresh, nobody else may claim it, b finishes it.
    assert await store.jobs.claim(record.id, kind, claimant="c", stale_after_s=FRESH) is None
    if kind == "summary":
        assert (await fetched(store, record.id)).summary_status is SummaryStatus.RUNNING
        assert await store.jobs.summaries_due(stale_after_s=FRESH) == []
    else:
        assert await store.jobs.titles_due(stale_after_s=FRESH) == []
    assert await finish(second, store)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_handed_back_job_is_pending_and_claimable_at_once(
    store: Store, kind: JobKind
) -> None:
    record = await created(store)
    await store.jobs.request_summary(record.id)
    handed = await claimed(store, record.id, kind, claimant="a")
    await store.jobs.hand_back(handed)
    due = store.jobs.summaries_due if kind == "summary" else store.jobs.titles_due
    assert await due(stale_after_s=FRESH) == [record.id]
    again = await claimed(store, record.id, kind, claimant="b")
    assert again.attempts == 0
    assert not await finish(handed, store)
    assert await finish(again, store)


@pytest.mark.parametrize("kind", KINDS)
async def test_each_failure_counts_in_the_next_claims_attempts(store: Store, kind: JobKind) -> None:
    record = await created(store)
    await store.jobs.request_summary(record.id)
    for attempts in range(3):
        claim = await claimed(store, record.id, kind)
        assert claim.attempts == attempts
        await store.jobs.fail(claim, retry_in_s=STALE)
    assert (await claimed(store, record.id, kind)).attempts == 3


# ---------------------------------------------------------------- failures and retries


async def test_a_failed_summary_with_a_due_retry_is_due_again(store: Store) -> None:
    record = await requested(store)
    await store.jobs.fail(await claimed(store, record.id), retry_in_s=STALE)
    assert (await fetched(store, record.id)).summary_status is SummaryStatus.FAILED
    assert await store.jobs.summaries_due(stale_after_s=FRESH) == [record.id]
    assert await store.jobs.claim(record.id, "summary", claimant="b", stale_after_s=FRESH)


@pytest.mark.parametrize("retry_in_s", [60.0, None], ids=["later", "never"])
async def test_a_failed_summary_is_not_due_before_its_retry(
    store: Store, retry_in_s: float | None
) -> None:
    record = await requested(store)
    await store.jobs.fail(await claimed(store, record.id), retry_in_s=retry_in_s)
    assert (await fetched(store, record.id)).summary_status is SummaryStatus.FAILED
    assert await store.jobs.summaries_due(stale_after_s=STALE) == []
    assert await store.jobs.claim(record.id, "summary", claimant="b", stale_after_s=STALE) is None


async def test_a_new_request_clears_the_failures(store: Store) -> None:
    record = await requested(store)
    await store.jobs.fail(await claimed(store, record.id), retry_in_s=None)
    await store.jobs.request_summary(record.id)
    assert (await claimed(store, record.id)).attempts == 0


async def test_summaries_due_are_pending_failed_due_and_stale_running(store: Store) -> None:
    untouched, pending, due, later, never, running, done = [await created(store) for _ in range(7)]
    for record in (pending, due, later, never, running, done):
        await store.jobs.request_summary(record.id)
    for record, retry_in_s in ((due, STALE), (later, 60.0), (never, None)):
        await store.jobs.fail(await claimed(store, record.id), retry_in_s=retry_in_s)
    await claimed(store, running.id)
    assert await finish(await claimed(store, done.id), store)
    fresh = await store.jobs.summaries_due(stale_after_s=FRESH)
    assert sorted(fresh) == sorted([pending.id, due.id])
    stale = await store.jobs.summaries_due(stale_after_s=STALE)
    assert sorted(stale) == sorted([pending.id, due.id, running.id])
    assert untouched.id not in stale


# ---------------------------------------------------------------- titles


async def test_a_title_is_claimed_from_none_once_and_stored(store: Store) -> None:
    record = await created(store)
    claim = await claimed(store, record.id, "title")
    assert (claim.kind, claim.attempts) == ("title", 0)
    assert await store.jobs.claim(record.id, "title", claimant="b", stale_after_s=FRESH) is None
    assert await store.jobs.finish_title(claim, "Alpha planning")
    assert (await fetched(store, record.id)).title == "Alpha planning"


async def test_a_title_is_never_claimed_over_an_existing_one(store: Store) -> None:
    titled = await created(store)
    assert await store.jobs.finish_title(await claimed(store, titled.id, "title"), "Named")
    assert await store.jobs.claim(titled.id, "title", claimant="b", stale_after_s=STALE) is None
    assert await store.jobs.titles_due(stale_after_s=STALE) == []


async def test_a_session_created_with_a_title_gets_no_title_job(store: Store) -> None:
    record = replace(session_record(), title="Given")
    await store.sessions.create(record)
    assert await store.jobs.claim(record.id, "title", claimant="a", stale_after_s=STALE) is None


async def test_titles_due_are_pending_failed_due_and_stale_running_not_none(
    store: Store,
) -> None:
    untouched, pending, due, later, running = [await created(store) for _ in range(5)]
    await store.jobs.hand_back(await claimed(store, pending.id, "title"))
    await store.jobs.fail(await claimed(store, due.id, "title"), retry_in_s=STALE)
    await store.jobs.fail(await claimed(store, later.id, "title"), retry_in_s=60.0)
    await claimed(store, running.id, "title")
    fresh = await store.jobs.titles_due(stale_after_s=FRESH)
    assert sorted(fresh) == sorted([pending.id, due.id])
    stale = await store.jobs.titles_due(stale_after_s=STALE)
    assert sorted(stale) == sorted([pending.id, due.id, running.id])
    assert untouched.id not in stale


async def test_title_and_summary_jobs_are_independent(store: Store) -> None:
    record = await requested(store)
    summary = await claimed(store, record.id, "summary")
    title = await claimed(store, record.id, "title")
    assert await store.jobs.finish_title(title, "Named")
    assert (await fetched(store, record.id)).summary_status is SummaryStatus.RUNNING
    assert await store.jobs.finish_summary(summary, summary="s", upto_seq=1)
    after = await fetched(store, record.id)
    assert (after.title, after.summary, after.summary_status) == ("Named", "s", SummaryStatus.DONE)


# ---------------------------------------------------------------- a dead claimant's jobs


async def test_reclaim_hands_back_only_that_claimants_running_jobs(store: Store) -> None:
    summary, title, finished, others = [await created(store) for _ in range(4)]
    for record in (summary, finished, others):
        await store.jobs.request_summary(record.id)
    dead_summary = await claimed(store, summary.id, claimant="dead")
    dead_title = await claimed(store, title.id, "title", claimant="dead")
    assert await finish(await claimed(store, finished.id, claimant="dead"), store)
    alive = await claimed(store, others.id, claimant="alive")
    assert await store.jobs.reclaim("dead") == 2
    assert await store.jobs.reclaim("dead") == 0
    assert await store.jobs.summaries_due(stale_after_s=FRESH) == [summary.id]
    assert await store.jobs.titles_due(stale_after_s=FRESH) == [title.id]
    assert not await finish(dead_summary, store)
    assert not await finish(dead_title, store)
    assert await finish(alive, store)
    assert await finish(await claimed(store, summary.id, claimant="next"), store)


# ---------------------------------------------------------------- sessions left unsummarized


async def test_unsummarized_sessions_are_those_with_events_past_their_summary(
    store: Store,
) -> None:
    behind, summarized_one, pending, failed, quiet = [await created(store) for _ in range(5)]
    for record in (behind, summarized_one, pending, failed):
        await with_events(store, record, 2)
    await summarized(store, summarized_one, upto_seq=2)
    await store.jobs.request_summary(pending.id)
    await store.jobs.request_summary(failed.id)
    await store.jobs.fail(await claimed(store, failed.id), retry_in_s=None)
    assert await store.jobs.unsummarized_sessions() == [behind.id]
    assert quiet.id not in await store.jobs.unsummarized_sessions()


async def test_a_summary_covering_part_of_the_session_is_behind_again(store: Store) -> None:
    record = await created(store)
    await with_events(store, record, 2)
    await summarized(store, record, upto_seq=2)
    assert await store.jobs.unsummarized_sessions() == []
    lease = await leased(store, record.id)
    await store.events.append(rows_of(lease, user_message(3, "more")))
    await store.leases.release(lease)
    assert await store.jobs.unsummarized_sessions() == [record.id]


async def test_a_session_with_an_unexpired_lease_is_not_unsummarized(store: Store) -> None:
    record = await created(store)
    lease = await leased(store, record.id)
    await store.events.append(rows_of(lease, user_message(1, "hi")))
    assert await store.jobs.unsummarized_sessions() == []
    await store.leases.mark_closing(lease)  # its last response may still be finishing
    assert await store.jobs.unsummarized_sessions() == []
    await store.leases.release(lease)
    assert await store.jobs.unsummarized_sessions() == [record.id]


async def test_a_session_whose_lease_expired_is_unsummarized(store: Store) -> None:
    record = await created(store)
    lease = await leased(store, record.id)
    await store.events.append(rows_of(lease, user_message(1, "hi")))
    await store.leases.renew([lease], ttl_s=-1)  # its instance died
    assert await store.jobs.unsummarized_sessions() == [record.id]
