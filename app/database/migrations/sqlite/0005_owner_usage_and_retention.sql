-- Version 5: usage per owner and the housekeeping claim, as in the PostgreSQL schema.
create table if not exists owner_usage (
    owner text not null,
    kind text not null check (kind in ('tokens', 'sessions')),
    window_start text not null,
    amount integer not null default 0,
    primary key (owner, kind, window_start)
) without rowid;
create index if not exists owner_usage_window_idx on owner_usage (window_start);
create table if not exists housekeeping_claims (
    name text primary key,
    holder text not null,
    expires_at text not null
);
create index if not exists sessions_empty_created_idx on sessions (created_at)
    where event_count = 0;
create index if not exists sessions_updated_idx on sessions (updated_at);
-- Tokens counted as an answer is stored, once (a retried append inserts nothing): the day is the
-- event's UTC day, in the fixed-width time format of this store.
create trigger if not exists session_events_count_tokens
after insert on session_events
when new.type = 'assistant.message'
begin
    insert into owner_usage (owner, kind, window_start, amount)
    select coalesce(s.owner, ''), 'tokens', substr(new.created_at, 1, 10) || 'T00:00:00.000000Z',
        t.tokens
    from sessions s, (select cast(min(max(coalesce(
        case when json_type(new.data, '$.usage.total_tokens') in ('integer', 'real')
            then json_extract(new.data, '$.usage.total_tokens') end,
        case when json_type(new.data, '$.usage.prompt_tokens') in ('integer', 'real')
            then json_extract(new.data, '$.usage.prompt_tokens') else 0 end
        + case when json_type(new.data, '$.usage.completion_tokens') in ('integer', 'real')
            then json_extract(new.data, '$.usage.completion_tokens') else 0 end
    ), 0), 1000000000000) as integer) as tokens) t
    where s.id = new.session_id and t.tokens > 0
    on conflict (owner, kind, window_start) do update set amount = amount + excluded.amount;
end;
