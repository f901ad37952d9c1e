-- Supabase only: row-level security, grants and policies. Run in the project's SQL editor AFTER
-- schema.sql (both are idempotent: run them again after an upgrade of the app).
--
-- The server itself uses the service role / secret key, which bypasses RLS, and scopes every
-- query by owner on its own. These policies guard the tables against everyone else: the `anon`
-- key reaches nothing, and a signed-in user (`authenticated`, e.g. a browser using supabase-js)
-- reaches only sessions whose `owner` is their user id (auth.uid()) and those sessions' events.
-- `(select auth.uid())` is evaluated once per statement, not once per row.

alter table public.sessions enable row level security;
alter table public.session_events enable row level security;
alter table public.user_profiles enable row level security;
alter table public.schema_version enable row level security;

-- Supabase grants every table to anon and authenticated by default: take that back, then give
-- each role exactly what its policies allow.
revoke all on public.sessions, public.session_events, public.user_profiles, public.schema_version
    from anon, authenticated;
grant select, insert, update, delete on public.sessions to authenticated;
grant select, insert on public.session_events to authenticated;
grant select on public.user_profiles to authenticated;
grant all on public.sessions, public.session_events, public.user_profiles, public.schema_version
    to service_role;
-- The event trigger runs as its owner (security definer); nobody calls it directly.
revoke all on function public.touch_sessions_after_events() from public, anon, authenticated;

drop policy if exists sessions_owner_select on public.sessions;
create policy sessions_owner_select on public.sessions for select to authenticated
    using (owner = (select auth.uid())::text);

drop policy if exists sessions_owner_insert on public.sessions;
create policy sessions_owner_insert on public.sessions for insert to authenticated
    with check (owner = (select auth.uid())::text);

drop policy if exists sessions_owner_update on public.sessions;
create policy sessions_owner_update on public.sessions for update to authenticated
    using (owner = (select auth.uid())::text)
    with check (owner = (select auth.uid())::text);

drop policy if exists sessions_owner_delete on public.sessions;
create policy sessions_owner_delete on public.sessions for delete to authenticated
    using (owner = (select auth.uid())::text);

-- A foreign key does not check RLS: without the parent check below, user B could append events
-- to user A's session just by knowing its id.
drop policy if exists session_events_owner_select on public.session_events;
create policy session_events_owner_select on public.session_events for select to authenticated
    using (exists (
        select 1 from public.sessions s
        where s.id = session_id and s.owner = (select auth.uid())::text
    ));

drop policy if exists session_events_owner_insert on public.session_events;
create policy session_events_owner_insert on public.session_events for insert to authenticated
    with check (exists (
        select 1 from public.sessions s
        where s.id = session_id and s.owner = (select auth.uid())::text
    ));

-- Demo data behind the fetch_user_profile tool: readable by signed-in users, written by the server.
drop policy if exists user_profiles_read on public.user_profiles;
create policy user_profiles_read on public.user_profiles for select to authenticated using (true);

-- Events are append-only for users (no update/delete policy); deleting a session removes its
-- events through the foreign key's cascade. schema_version has no policy: service role only.

-- Leases of live sessions (schema version 3): written by the servers only.
alter table public.session_leases enable row level security;
revoke all on public.session_leases from anon, authenticated;
grant all on public.session_leases to service_role;

-- Usage per owner and housekeeping claims (schema version 5): the servers only. The functions
-- the REST store calls run as their caller (the service role); nobody else may call them.
alter table public.owner_usage enable row level security;
alter table public.housekeeping_claims enable row level security;
revoke all on public.owner_usage, public.housekeeping_claims from anon, authenticated;
grant all on public.owner_usage, public.housekeeping_claims to service_role;
revoke all on function public.count_answer_tokens() from public, anon, authenticated;
revoke all on function public.take_owner_usage(jsonb) from public, anon, authenticated;
revoke all on function public.live_sessions_of(jsonb) from public, anon, authenticated;
revoke all on function public.claim_housekeeping(jsonb) from public, anon, authenticated;
revoke all on function public.delete_old_sessions(jsonb) from public, anon, authenticated;
