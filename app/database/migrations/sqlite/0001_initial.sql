-- Version 1: sessions, their events, the demo user profiles.
create table if not exists sessions (
    id text primary key,
    owner text,
    created_at text not null,
    updated_at text not null,
    model text not null,
    title text,
    summary text,
    summary_status text not null default 'none',
    summary_seq integer not null default 0,
    event_count integer not null default 0
);
create index if not exists sessions_created_idx on sessions (created_at desc, id desc);
create index if not exists sessions_owner_created_idx on sessions (owner, created_at desc, id desc);
create table if not exists session_events (
    session_id text not null references sessions (id) on delete cascade,
    seq integer not null check (seq > 0),
    type text not null,
    message_id text,
    created_at text not null,
    data text not null,
    primary key (session_id, seq),
    unique (session_id, message_id)
) without rowid;
create table if not exists user_profiles (user_id text primary key, profile text not null);
