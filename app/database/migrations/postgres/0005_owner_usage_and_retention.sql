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
