"""AUTH_MODE=supabase end to end: a fake project's user JWTs on the WebSocket and on REST."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.fakes.jwks_server import HS256_SECRET, FakeSupabaseAuth, new_es256_key
from tests.support.client import WsClient
from tests.support.server import RunningServer


@pytest.fixture
def fake_auth() -> Iterator[FakeSupabaseAuth]:
    with FakeSupabaseAuth() as fake:
        yield fake


@pytest.fixture
def server(start_server: StartServer, fake_auth: FakeSupabaseAuth) -> RunningServer:
    # make_settings sets DATABASE_URL (SQLite), so SUPABASE_URL selects only the auth.
    return start_server(
        auth_mode="supabase", supabase_url=fake_auth.base_url, supabase_jwt_secret=HS256_SECRET
    )


async def _refused(client: WsClient) -> tuple[str, int | None]:
    frame = await client.recv()
    return frame["code"], await client.closed_with()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_by_query_or_header_opens_a_session(
    server: RunningServer, fake_auth: FakeSupabaseAuth
) -> None:
    assert server.settings.store_kind() == "sqlite"
    async with server.connect(f"token={fake_auth.token('user-a')}") as client:
        assert (await client.ready())["type"] == "session.ready"
    headers = _bearer(fake_auth.token("user-a"))
    async with server.connect(additional_headers=headers) as client:
        assert (await client.ready())["type"] == "session.ready"
    async with server.connect(f"token={fake_auth.hs256_token('user-a')}") as client:
        assert (await client.ready())["type"] == "session.ready"


def _bad_tokens(fake: FakeSupabaseAuth) -> list[str]:
    now = int(time.time())
    return [
        fake.token(exp=now - 120, iat=now - 3700),
        fake.token(aud="anon"),
        fake.token(iss="https://other.supabase.co/auth/v1"),
        fake.token(key=new_es256_key()),
        fake.token(kid="not-published", key=new_es256_key()),
        fake.token(None),
        fake.hs256_token(secret="another-secret-of-at-least-32-bytes!"),
        "garbage",
    ]


async def test_bad_tokens_are_unauthorized_on_the_websocket(
    server: RunningServer, fake_auth: FakeSupabaseAuth
) -> None:
    async with server.connect() as client:
        assert await _refused(client) == ("unauthorized", 4401)
    for token in _bad_tokens(fake_auth):
        async with server.connect(f"token={token}") as client:
            assert await _refused(client) == ("unauthorized", 4401), token


async def test_bad_tokens_are_401_on_rest(
    server: RunningServer, fake_auth: FakeSupabaseAuth
) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/api/sessions")).status_code == 401
        for token in _bad_tokens(fake_auth):
            response = await http.get("/api/sessions", headers=_bearer(token))
            assert response.status_code == 401, (token, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
        good = await http.get("/api/sessions", params={"token": fake_auth.token()})
        assert good.status_code == 200, good.text


async def test_users_see_only_their_own_sessions(
    server: RunningServer, fake_auth: FakeSupabaseAuth, fake_groq: FakeGroq
) -> None:
    alice, bob = fake_auth.token("user-a"), fake_auth.token("user-b")
    async with server.connect(f"token={alice}") as client:
        session_id = (await client.ready())["session_id"]
        await client.speak(lambda: fake_groq.script(text_reply("Hi Alice.")))
    async with server.connect(f"token={bob}&session_id={session_id}") as client:
        assert await _refused(client) == ("session_not_found", 4404)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        theirs = await http.get(f"/api/sessions/{session_id}", headers=_bearer(bob))
        assert theirs.status_code == 404, theirs.text
        mine = await http.get(f"/api/sessions/{session_id}", headers=_bearer(alice))
        assert mine.status_code == 200, mine.text
    async with server.connect(f"token={alice}&session_id={session_id}") as client:
        assert (await client.ready())["resumed"] is True
    with server.db() as db:
        row = db.execute("select owner from sessions where id = ?", (session_id,)).fetchone()
    assert row["owner"] == "user:user-a"


async def test_jwks_is_fetched_once_for_many_connections(
    server: RunningServer, fake_auth: FakeSupabaseAuth
) -> None:
    for n in range(5):
        async with server.connect(f"token={fake_auth.token(f'user-{n}')}") as client:
            await client.ready()
    assert fake_auth.jwks_requests == 1


async def test_a_jwks_outage_is_a_retryable_refusal(
    server: RunningServer, fake_auth: FakeSupabaseAuth
) -> None:
    fake_auth.jwks_status = 503
    async with server.connect(f"token={fake_auth.token('user-a')}") as client:
        frame = await client.recv()
        code = await client.closed_with()
    assert (frame["code"], frame["retryable"]) == ("auth_unavailable", True)
    assert code == 1013  # try again later
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/api/sessions", headers=_bearer(fake_auth.token("user-a")))
        # HS256 tokens need no keys: they still work during the outage.
        hs256 = await http.get("/api/sessions", headers=_bearer(fake_auth.hs256_token("user-a")))
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert "signing keys" in response.json()["detail"]
    assert hs256.status_code == 200, hs256.text
