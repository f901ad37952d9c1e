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
