-- Version 3: leases and job claims, as in the PostgreSQL schema (several worker processes may
-- share one SQLite file). Times are fixed-width UTC text, so text order is time order.
create table if not exists session_leases (
    session_id text primary key references sessions (id) on delete cascade,
    holder text not null,
    state text not null check (state in ('live', 'closing')),
    expires_at text not null
);
alter table sessions add column summary_claimed_at text;
alter table sessions add column title_status text not null default 'none'
    check (title_status in ('none', 'pending', 'running', 'done', 'failed'));
alter table sessions add column title_claimed_at text;
update sessions set title_status = 'done' where title is not null and title_status = 'none';
create index if not exists sessions_title_todo_idx on sessions (title_status)
    where title_status in ('pending', 'running');
