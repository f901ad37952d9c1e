"""Supabase user JWTs checked against a fake project's JWKS served on a real socket."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.services.jwt_auth import InvalidToken, JwksCache, KeysUnavailable, SupabaseJwtVerifier
from app.settings import Settings, SettingsError, load_settings
from tests.fakes.jwks_server import HS256_SECRET, JWKS_PATH, FakeSupabaseAuth, new_es256_key
from tests.support.server import free_port


@pytest.fixture
def fake_auth() -> Iterator[FakeSupabaseAuth]:
    with FakeSupabaseAuth() as fake:
        yield fake


def _verifier(
    fake: FakeSupabaseAuth, *, secret: str | None = HS256_SECRET, min_refresh_s: float = 30.0
) -> SupabaseJwtVerifier:
    jwks = JwksCache(fake.base_url + JWKS_PATH, timeout_s=2.0, min_refresh_s=min_refresh_s)
    return SupabaseJwtVerifier(issuer=fake.issuer, jwks=jwks, jwt_secret=secret)


@pytest.fixture
async def verifier(fake_auth: FakeSupabaseAuth) -> AsyncIterator[SupabaseJwtVerifier]:
    checker = _verifier(fake_auth)
    yield checker
    await checker.aclose()


async def test_es256_token_gives_its_subject(
    verifier: SupabaseJwtVerifier, fake_auth: FakeSupabaseAuth
) -> None:
    assert await verifier.user_id(fake_auth.token("user-a")) == "user-a"


async def test_hs256_token_checks_with_the_project_secret(
    verifier: SupabaseJwtVerifier, fake_auth: FakeSupabaseAuth
) -> None:
    assert await verifier.user_id(fake_auth.hs256_token("user-b")) == "user-b"
    with pytest.raises(InvalidToken):
        await verifier.user_id(fake_auth.hs256_token("user-b", secret="x" * 40))


async def test_hs256_is_refused_without_a_secret(fake_auth: FakeSupabaseAuth) -> None:
    checker = _verifier(fake_auth, secret=None)
    try:
        with pytest.raises(InvalidToken, match="HS256"):
            await checker.user_id(fake_auth.hs256_token())
    finally:
        await checker.aclose()


def _bad_tokens(fake: FakeSupabaseAuth) -> dict[str, str]:
    now = int(time.time())
    return {
        "expired": fake.token(exp=now - 120, iat=now - 3700),
        "wrong aud": fake.token(aud="anon"),
        "wrong iss": fake.token(iss="https://other.supabase.co/auth/v1"),
        "bad signature": fake.token(key=new_es256_key()),
        "unknown kid": fake.token(kid="not-a-published-kid", key=new_es256_key()),
        "missing sub": fake.token(None),
        "empty sub": fake.token(""),
        "garbage": "not.a.jwt",
        "unsigned": _unsigned(fake),
    }


def _unsigned(fake: FakeSupabaseAuth) -> str:
    # `alg: none` carries no signature; encode it by hand, as an attacker would.
    header = _b64({"alg": "none", "typ": "JWT"})
    return f"{header}.{_b64(fake.claims('user-a'))}."


def _b64(part: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "wrong aud",
        "wrong iss",
        "bad signature",
        "unknown kid",
        "missing sub",
        "empty sub",
        "garbage",
        "unsigned",
    ],
)
async def test_bad_tokens_are_refused(
    verifier: SupabaseJwtVerifier, fake_auth: FakeSupabaseAuth, case: str
) -> None:
    with pytest.raises(InvalidToken):
        await verifier.user_id(_bad_tokens(fake_auth)[case])


# Clocks of the auth server and of ours differ by a few seconds; 60 s of leeway absorbs that.
@pytest.mark.parametrize(
    ("claim", "offset_s", "accepted"),
    [
        ("exp", -30, True),
        ("nbf", 30, True),
        ("iat", 30, True),
        ("exp", -120, False),
        ("nbf", 120, False),
        ("iat", 120, False),
    ],
)
async def test_time_claims_allow_60_seconds_of_clock_skew(
    verifier: SupabaseJwtVerifier,
    fake_auth: FakeSupabaseAuth,
    claim: str,
    offset_s: int,
    accepted: bool,
) -> None:
    skewed: dict[str, Any] = {claim: int(time.time()) + offset_s}
    token = fake_auth.token("user-skew", **skewed)
    if accepted:
        assert await verifier.user_id(token) == "user-skew"
    else:
        with pytest.raises(InvalidToken):
            await verifier.user_id(token)


@pytest.mark.parametrize("status", [500, 503])
async def test_a_jwks_answering_5xx_is_an_outage_not_a_bad_token(
    fake_auth: FakeSupabaseAuth, status: int
) -> None:
    fake_auth.jwks_status = status
    checker = _verifier(fake_auth, min_refresh_s=30.0)
    try:
        with pytest.raises(KeysUnavailable) as first:
            await checker.user_id(fake_auth.token())
        # Within the refetch interval the auth server is not asked again, and it is still an
        # outage: the token is not judged without the keys.
        with pytest.raises(KeysUnavailable) as second:
            await checker.user_id(fake_auth.token())
    finally:
        await checker.aclose()
    assert fake_auth.jwks_requests == 1
    assert 1 <= second.value.retry_after_s <= 30
    assert first.value.retry_after_s >= second.value.retry_after_s


async def test_an_unreachable_jwks_is_an_outage_and_recovers(
    fake_auth: FakeSupabaseAuth,
) -> None:
    nowhere = JwksCache(f"http://127.0.0.1:{free_port()}{JWKS_PATH}", timeout_s=2.0)
    checker = SupabaseJwtVerifier(issuer=fake_auth.issuer, jwks=nowhere, jwt_secret=None)
    try:
        with pytest.raises(KeysUnavailable):
            await checker.user_id(fake_auth.token())
    finally:
        await checker.aclose()
    fake_auth.jwks_status = 503
    recovering = _verifier(fake_auth, min_refresh_s=0.0)
    try:
        with pytest.raises(KeysUnavailable):
            await recovering.user_id(fake_auth.token())
        fake_auth.jwks_status = 200
        assert await recovering.user_id(fake_auth.token("user-back")) == "user-back"
    finally:
        await recovering.aclose()


async def test_jwks_is_fetched_once_for_many_tokens(
    verifier: SupabaseJwtVerifier, fake_auth: FakeSupabaseAuth
) -> None:
    tokens = [fake_auth.token(f"user-{n}") for n in range(20)]
    users = await asyncio.gather(*(verifier.user_id(token) for token in tokens))
    assert users == [f"user-{n}" for n in range(20)]
    assert fake_auth.jwks_requests == 1


async def test_unknown_kids_do_not_hammer_the_auth_server(
    verifier: SupabaseJwtVerifier, fake_auth: FakeSupabaseAuth
) -> None:
    await verifier.user_id(fake_auth.token())
    for _ in range(10):
        with pytest.raises(InvalidToken):
            await verifier.user_id(fake_auth.token(kid="made-up", key=new_es256_key()))
    assert fake_auth.jwks_requests == 1


async def test_a_rotated_key_is_fetched_on_its_first_token(fake_auth: FakeSupabaseAuth) -> None:
    checker = _verifier(fake_auth, min_refresh_s=0.0)
    try:
        await checker.user_id(fake_auth.token())
        new_kid = fake_auth.add_key()
        assert await checker.user_id(fake_auth.token("user-r", kid=new_kid)) == "user-r"
        assert fake_auth.jwks_requests == 2
    finally:
        await checker.aclose()


async def test_a_jwks_url_that_is_not_found_refuses_tokens(fake_auth: FakeSupabaseAuth) -> None:
    # A 404 is a wrong SUPABASE_JWKS_URL, not an outage: retrying would not help.
    jwks = JwksCache(fake_auth.base_url + "/no-such-path", timeout_s=2.0)
    checker = SupabaseJwtVerifier(issuer=fake_auth.issuer, jwks=jwks, jwt_secret=None)
    try:
        with pytest.raises(InvalidToken, match="could not be fetched"):
            await checker.user_id(fake_auth.token())
    finally:
        await checker.aclose()


def test_supabase_auth_needs_supabase_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the machine
    monkeypatch.setenv("AUTH_MODE", "supabase")
    monkeypatch.setenv("SUPABASE_JWT_SECRET", HS256_SECRET)
    monkeypatch.setenv("DATABASE_URL", "sqlite:///:memory:")
    monkeypatch.delenv("SUPABASE_URL", raising=False)
    with pytest.raises(SettingsError, match="AUTH_MODE=supabase needs SUPABASE_URL"):
        load_settings()


def test_jwks_url_defaults_to_the_project_and_the_secret_is_redacted() -> None:
    settings = Settings(
        _env_file=None,
        auth_mode="supabase",
        supabase_url="https://ref.supabase.co/",
        supabase_jwt_secret=HS256_SECRET,
        database_url="sqlite:///:memory:",
    )
    assert settings.jwks_url() == "https://ref.supabase.co/auth/v1/.well-known/jwks.json"
    assert HS256_SECRET in settings.secret_values()
    custom = settings.model_copy(update={"supabase_jwks_url": "https://keys.example/jwks"})
    assert custom.jwks_url() == "https://keys.example/jwks"


def test_jwks_url_must_be_http(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the machine
    monkeypatch.setenv("SUPABASE_JWKS_URL", "ftp://nope")
    with pytest.raises(SettingsError, match="SUPABASE_JWKS_URL"):
        load_settings()
