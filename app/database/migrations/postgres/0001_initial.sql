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
