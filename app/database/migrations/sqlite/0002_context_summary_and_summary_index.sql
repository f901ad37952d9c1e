-- Version 2: the rolling context summary of long conversations, and the index start-up uses to
-- find summaries left pending by a stopped process (as in the PostgreSQL schema).
alter table sessions add column context_summary text;
alter table sessions add column context_summary_seq integer not null default 0;
create index if not exists sessions_summary_todo_idx on sessions (summary_status)
    where summary_status in ('pending', 'running');
