"""Supabase user JWTs checked against a fake project's JWKS served on a real socket."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.services.jwt_auth import InvalidToken, JwksCache, SupabaseJwtVerifier
from app.settings import Settings, SettingsError, load_settings
from tests.fakes.jwks_server import HS256_SECRET, JWKS_PATH, FakeSupabaseAuth, new_es256_key


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
        "expired": fake.token(exp=now - 60, iat=now - 3700),
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


async def test_an_unreachable_jwks_refuses_tokens(fake_auth: FakeSupabaseAuth) -> None:
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
