-- Version 4: fenced writers and fenced jobs, as in the PostgreSQL schema. SQLite cannot change a
-- check constraint, so the lease table is rebuilt (its rows are kept, at epoch 0).
create table session_leases_v4 (
    session_id text primary key references sessions (id) on delete cascade,
    holder text not null,
    state text not null check (state in ('live', 'closing', 'free')),
    expires_at text not null,
    epoch integer not null default 0
);
insert into session_leases_v4 (session_id, holder, state, expires_at)
    select session_id, holder, state, expires_at from session_leases;
drop table session_leases;
alter table session_leases_v4 rename to session_leases;

alter table sessions add column summary_claim text;
alter table sessions add column summary_claimed_by text;
alter table sessions add column summary_attempts integer not null default 0;
alter table sessions add column summary_retry_at text;
alter table sessions add column title_claim text;
alter table sessions add column title_claimed_by text;
alter table sessions add column title_attempts integer not null default 0;
alter table sessions add column title_retry_at text;
-- The same column the PostgreSQL schema has, so both stores share the query that uses it.
alter table sessions add column summary_behind integer
    generated always as (event_count > summary_seq) virtual;
drop index if exists sessions_summary_todo_idx;
create index if not exists sessions_summary_todo_idx on sessions (summary_status)
    where summary_status in ('pending', 'running', 'failed');
