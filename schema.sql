-- PostgreSQL / Supabase schema, version 6. GENERATED from app/database/migrations/postgres/
-- by `python -m app.database.migrations > schema.sql`; edit the migrations, not this file.
--
-- Applies cleanly to an empty plain PostgreSQL (13+), and upgrades an older one in place: every
-- step is idempotent. The PostgreSQL store applies the same steps by itself at start; run this
-- file by hand only where the app cannot (the Supabase SQL editor, before the REST store).
-- Supabase-only parts (row-level security, grants, policies with auth.uid()) live in
-- supabase/policies.sql, so that plain PostgreSQL needs no `auth` schema.

create table if not exists schema_version (
    version integer not null,
    applied_at timestamptz not null default now()
);

-- ---------------------------------------------------- 0001_initial
-- Version 1: sessions, their events, the demo user profiles.

create table if not exists sessions (
    id uuid primary key default gen_random_uuid(),
    -- Who made the session (an API key's name or a Supabase user id); null when auth is off.
    owner text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    model text not null,
    title text,
    summary text,
    summary_status text not null default 'none'
        check (summary_status in ('none', 'pending', 'running', 'done', 'failed')),
    -- Last event seq the summary covers: a resumed session is re-summarized from there.
    summary_seq integer not null default 0,
    -- Equals the last seq, since seqs are gapless from 1.
    event_count integer not null default 0
);

-- Newest-first listing with a (created_at, id) cursor, globally and per owner.
create index if not exists sessions_created_idx on sessions (created_at desc, id desc);
create index if not exists sessions_owner_created_idx on sessions (owner, created_at desc, id desc);
-- Start-up finds summaries left pending by a stopped process.
create index if not exists sessions_summary_todo_idx on sessions (summary_status)
    where summary_status in ('pending', 'running');

create table if not exists session_events (
    session_id uuid not null references sessions (id) on delete cascade,
    seq integer not null check (seq > 0),
    type text not null
        check (type in ('user.message', 'tool.call', 'tool.result', 'assistant.message')),
    -- The client's message id of a user.message, for idempotent retries; null otherwise.
    message_id text,
    created_at timestamptz not null default now(),
    data jsonb not null,
    -- Doubles as the index that reads a session in order; seq is 1..N without gaps.
    primary key (session_id, seq),
    unique (session_id, message_id)
);

-- Demo data behind the fetch_user_profile tool.
create table if not exists user_profiles (
    user_id text primary key,
    profile jsonb not null
);

insert into schema_version (version)
select 1 where not exists (select 1 from schema_version where version = 1);

-- ---------------------------------------------------- 0002_touch_sessions_and_context_summary
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

insert into schema_version (version)
select 2 where not exists (select 1 from schema_version where version = 2);

-- ---------------------------------------------------- 0003_leases_and_claims
-- Version 3: several server instances on one database.
--
-- One live connection per session across instances: the instance serving a session holds its
-- lease row, renews it by a heartbeat, marks it `closing` once the client left (its response may
-- still be finishing: a resume elsewhere waits) and deletes it at teardown. A lease whose
-- instance died expires at `expires_at`, so the session can be resumed elsewhere.
create table if not exists session_leases (
    session_id uuid primary key references sessions (id) on delete cascade,
    -- The instance id (a uuid per process) of the holder.
    holder text not null,
    state text not null check (state in ('live', 'closing')),
    expires_at timestamptz not null
);

-- Background jobs are claimed (`pending` -> `running`) by one instance with a conditional update;
-- a `running` claim older than a bound was left by an instance that died and may be taken over.
alter table sessions add column if not exists summary_claimed_at timestamptz;
alter table sessions add column if not exists title_status text not null default 'none'
    check (title_status in ('none', 'pending', 'running', 'done', 'failed'));
alter table sessions add column if not exists title_claimed_at timestamptz;
update sessions set title_status = 'done' where title is not null and title_status = 'none';
create index if not exists sessions_title_todo_idx on sessions (title_status)
    where title_status in ('pending', 'running');

insert into schema_version (version)
select 3 where not exists (select 1 from schema_version where version = 3);

-- ---------------------------------------------------- 0004_fenced_writers_and_jobs
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

insert into schema_version (version)
select 4 where not exists (select 1 from schema_version where version = 4);

-- ---------------------------------------------------- 0005_owner_usage_and_retention
-- Version 5: usage per owner (tokens per UTC day, new sessions per UTC hour), and the claim
-- that lets one instance at a time sweep old sessions away.
--
-- `owner` is the session owner, or '' for the one shared owner when auth is off. Each row
-- counts one kind in one window; a window's row is made by its first use.
create table if not exists owner_usage (
    owner text not null,
    kind text not null check (kind in ('tokens', 'sessions')),
    window_start timestamptz not null,
    amount bigint not null default 0,
    primary key (owner, kind, window_start)
);
-- The sweep forgets windows long past.
create index if not exists owner_usage_window_idx on owner_usage (window_start);

-- Housekeeping jobs shared by every instance: the holder of an unexpired claim runs it.
create table if not exists housekeeping_claims (
    name text primary key,
    holder text not null,
    expires_at timestamptz not null
);

-- The retention sweep finds empty and idle sessions by these.
create index if not exists sessions_empty_created_idx on sessions (created_at)
    where event_count = 0;
create index if not exists sessions_updated_idx on sessions (updated_at);

-- The tokens of an answer's `usage`: `total_tokens`, else prompt plus completion; anything that
-- is not a number counts 0, and a count is clamped, so that no usage can ever refuse an append.
create or replace function public.usage_tokens(usage jsonb) returns bigint
language sql immutable set search_path = '' as $$
    select least(greatest(coalesce(
        case when jsonb_typeof(usage -> 'total_tokens') = 'number'
            then (usage ->> 'total_tokens')::numeric end,
        case when jsonb_typeof(usage -> 'prompt_tokens') = 'number'
            then (usage ->> 'prompt_tokens')::numeric else 0 end
        + case when jsonb_typeof(usage -> 'completion_tokens') = 'number'
            then (usage ->> 'completion_tokens')::numeric else 0 end
    ), 0), 1000000000000)::bigint
$$;

-- Tokens are counted as an answer is stored, in the same transaction as its event, once: a
-- retried append inserts nothing (ON CONFLICT DO NOTHING), so it counts nothing.
create or replace function public.count_answer_tokens() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
    tokens bigint := public.usage_tokens(new.data -> 'usage');
begin
    if tokens > 0 then
        insert into public.owner_usage as u (owner, kind, window_start, amount)
        select coalesce(s.owner, ''), 'tokens',
            date_trunc('day', new.created_at at time zone 'UTC') at time zone 'UTC', tokens
        from public.sessions s where s.id = new.session_id
        on conflict (owner, kind, window_start) do update set amount = u.amount + excluded.amount;
    end if;
    return null;
end;
$$;

drop trigger if exists session_events_count_tokens on session_events;
create trigger session_events_count_tokens
    after insert on session_events
    for each row when (new.type = 'assistant.message')
    execute function public.count_answer_tokens();

-- The same operations as the SQL stores run, as functions for the REST store (one call = one
-- statement). Arguments come as one JSON object, as PostgREST passes them.

-- One more of `kind` in its window, unless the window already holds `limit`: true when taken.
create or replace function public.take_owner_usage(request jsonb) returns boolean
language sql set search_path = '' as $$
    with taken as (
        insert into public.owner_usage as u (owner, kind, window_start, amount)
        values (request ->> 'owner', request ->> 'kind',
            (request ->> 'window_start')::timestamptz, 1)
        on conflict (owner, kind, window_start) do update set amount = u.amount + 1
        where u.amount < (request ->> 'limit')::bigint
        returning 1
    )
    select exists (select 1 from taken)
$$;

-- The owner's sessions with a live, unexpired lease (at most `limit` of them).
create or replace function public.live_sessions_of(request jsonb) returns jsonb
language sql stable set search_path = '' as $$
    select coalesce(jsonb_agg(live.session_id), '[]'::jsonb) from (
        select l.session_id from public.session_leases l
        join public.sessions s on s.id = l.session_id
        where coalesce(s.owner, '') = request ->> 'owner'
            and l.state = 'live' and l.expires_at > now()
        limit (request ->> 'limit')::integer
    ) live
$$;

-- Take (or keep) the housekeeping claim `name` for `ttl_s` seconds: true when `holder` has it.
create or replace function public.claim_housekeeping(request jsonb) returns boolean
language sql set search_path = '' as $$
    with claimed as (
        insert into public.housekeeping_claims as c (name, holder, expires_at)
        values (request ->> 'name', request ->> 'holder',
            now() + make_interval(secs => (request ->> 'ttl_s')::double precision))
        on conflict (name) do update set holder = excluded.holder, expires_at = excluded.expires_at
        where c.expires_at < now() or c.holder = excluded.holder
        returning 1
    )
    select exists (select 1 from claimed)
$$;

-- Delete at most `batch` sessions that hold no live or closing lease: `empty` ones (no events)
-- created before `before`, or `idle` ones (no event since `before`). Their events, lease and
-- summaries go with them. How many were deleted.
create or replace function public.delete_old_sessions(request jsonb) returns integer
language plpgsql set search_path = '' as $$
declare
    deleted integer;
begin
    delete from public.sessions where id in (
        select s.id from public.sessions s
        where case request ->> 'kind'
                when 'empty' then s.event_count = 0
                    and s.created_at < (request ->> 'before')::timestamptz
                when 'idle' then s.updated_at < (request ->> 'before')::timestamptz
            end
            and not exists (
                select 1 from public.session_leases l
                where l.session_id = s.id and l.state <> 'free' and l.expires_at > now()
            )
        limit (request ->> 'batch')::integer
    );
    get diagnostics deleted = row_count;
    return deleted;
end;
$$;

insert into schema_version (version)
select 5 where not exists (select 1 from schema_version where version = 5);

-- ---------------------------------------------------- 0006_tool_approval_events
-- Version 6: the event types of protocol 1.1's tool approval.
--
-- `tool.approval_requested` (a call waits for the person's answer) and `tool.approval` (the
-- answer) are stored like every other event, so the type check lists them.
alter table session_events drop constraint if exists session_events_type_check;
alter table session_events add constraint session_events_type_check
    check (type in ('user.message', 'tool.call', 'tool.result', 'assistant.message',
                    'tool.approval_requested', 'tool.approval'));

insert into schema_version (version)
select 6 where not exists (select 1 from schema_version where version = 6);
