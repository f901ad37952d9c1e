-- Version 4: fenced writers and fenced jobs.
--
-- A lease row now outlives its holdings: releasing it sets `state = 'free'`, and every
-- acquisition increments `epoch`. An event write names the lease (holder, epoch) it was made
-- under; `append_session_events` refuses it unless that is the session's current holding, so a
-- writer that lost its lease (taken over after an outage, released, session deleted) can never
-- store an event again, even on the same instance.
alter table session_leases add column if not exists epoch bigint not null default 0;
alter table session_leases drop constraint if exists session_leases_state_check;
alter table session_leases add constraint session_leases_state_check
    check (state in ('live', 'closing', 'free'));

-- Summary and title jobs: a claim carries a token (checked by every write of the job's outcome)
-- and the claiming instance (so its successor hands its jobs back at once after a crash); a
-- failed job is retried after `*_retry_at`, a bounded number of times.
alter table sessions add column if not exists summary_claim text;
alter table sessions add column if not exists summary_claimed_by text;
alter table sessions add column if not exists summary_attempts integer not null default 0;
alter table sessions add column if not exists summary_retry_at timestamptz;
alter table sessions add column if not exists title_claim text;
alter table sessions add column if not exists title_claimed_by text;
alter table sessions add column if not exists title_attempts integer not null default 0;
alter table sessions add column if not exists title_retry_at timestamptz;
drop index if exists sessions_summary_todo_idx;
create index if not exists sessions_summary_todo_idx on sessions (summary_status)
    where summary_status in ('pending', 'running', 'failed');

-- `now() + ttl` in one spelling that SQLite shares (the SQLite store defines the same function).
create or replace function public.seconds_from_now(seconds double precision)
returns timestamptz language sql stable set search_path = '' as $$
    select now() + make_interval(secs => seconds)
$$;

-- The rows of an append, as sent: a JSON array of objects with the event columns and the
-- writer's lease (`writer`, `writer_epoch`).
create or replace function public.session_events_in(events jsonb)
returns table (
    session_id uuid, seq integer, type text, message_id text, created_at timestamptz,
    data jsonb, writer text, writer_epoch bigint
) language sql immutable set search_path = '' as $$
    select * from jsonb_to_recordset(events) as t(
        session_id uuid, seq integer, type text, message_id text, created_at timestamptz,
        data jsonb, writer text, writer_epoch bigint
    )
$$;

-- The writers' holdings named by an append, one row per (session, holder, epoch).
create or replace function public.session_event_writers(events jsonb)
returns table (session_id uuid, writer text, writer_epoch bigint)
language sql immutable set search_path = '' as $$
    select distinct (e->>'session_id')::uuid, e->>'writer', (e->>'writer_epoch')::bigint
    from jsonb_array_elements(events) e
$$;

-- One fenced, atomic, idempotent append (used by the PostgreSQL store and, over REST as
-- /rpc/append_session_events, by the Supabase store):
-- - a row goes in only from its session's current holding, and never over another row;
-- - rows left out are fine if they are stored exactly as given (a retry, or a replay after the
--   lease was released); else the batch is refused and nothing is stored: SQLSTATE RT412 when a
--   writer does not hold its session's lease, RT409 when a different event has the seq or the
--   message id.
-- The leases are locked (share) first: a takeover waits for this write to commit, then reads it.
-- The common case costs the lock and one insert.
create or replace function public.append_session_events(events jsonb)
returns void language plpgsql set search_path = '' as $$
declare
    inserted integer;
begin
    perform 1 from public.session_leases l
    where l.session_id in (select w.session_id from public.session_event_writers(events) w)
    order by l.session_id
    for share;

    insert into public.session_events (session_id, seq, type, message_id, created_at, data)
    select i.session_id, i.seq, i.type, i.message_id, i.created_at, i.data
    from public.session_events_in(events) i
    where exists (
        select 1 from public.session_leases l
        where l.session_id = i.session_id and l.holder = i.writer
            and l.epoch = i.writer_epoch and l.state <> 'free'
    )
    on conflict do nothing;
    get diagnostics inserted = row_count;
    if inserted = jsonb_array_length(events) then
        return;
    end if;

    if exists (
        select 1 from public.session_events_in(events) i
        where not exists (
            select 1 from public.session_leases l
            where l.session_id = i.session_id and l.holder = i.writer
                and l.epoch = i.writer_epoch and l.state <> 'free'
        ) and not exists (
            select 1 from public.session_events e
            where e.session_id = i.session_id and e.seq = i.seq and e.data = i.data
        )
    ) then
        raise exception using errcode = 'RT412',
            message = 'the writer of a session in this batch does not hold its lease';
    end if;
    if exists (
        select 1 from public.session_events_in(events) i
        where not exists (
            select 1 from public.session_events e
            where e.session_id = i.session_id and e.seq = i.seq and e.data = i.data
        )
    ) then
        raise exception using errcode = 'RT409',
            message = 'a different event is already stored at one of these seqs or message ids';
    end if;
end;
$$;
