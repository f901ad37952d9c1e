-- Version 2: the database keeps sessions.event_count and updated_at itself, so a REST client
-- (PostgREST: one request is one statement, no multi-statement transactions) gets the same
-- semantics as the PostgreSQL store; the rolling context summary of long conversations; and
-- what start-up needs to find sessions whose summary is behind their events.

alter table sessions add column if not exists context_summary text;
-- The rolling summary stands in for events 1..context_summary_seq in model requests.
alter table sessions add column if not exists context_summary_seq integer not null default 0;

-- Sessions with events past their summary (a process killed while clients were connected leaves
-- them): start-up summarizes them. A stored column, because PostgREST filters cannot compare two
-- columns; the partial index keeps that start-up query small.
alter table sessions add column if not exists summary_behind boolean
    generated always as (event_count > summary_seq) stored;
create index if not exists sessions_summary_behind_idx on sessions (updated_at)
    where summary_behind and summary_status in ('none', 'done');

-- Once per INSERT statement, over the rows really inserted (a duplicate skipped by
-- ON CONFLICT DO NOTHING is not in the transition table): event_count = highest seq,
-- updated_at = newest event time. greatest() keeps both monotonic whatever the batch order.
-- security definer: the update of sessions must not depend on the caller's row-level policies.
create or replace function public.touch_sessions_after_events() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
    update public.sessions s
    set event_count = greatest(s.event_count, b.last_seq),
        updated_at = greatest(s.updated_at, b.newest)
    from (
        select session_id, max(seq) as last_seq, max(created_at) as newest
        from inserted group by session_id
    ) b
    where s.id = b.session_id;
    return null;
end;
$$;

drop trigger if exists session_events_touch_sessions on session_events;
create trigger session_events_touch_sessions
    after insert on session_events
    referencing new table as inserted
    for each statement execute function public.touch_sessions_after_events();
