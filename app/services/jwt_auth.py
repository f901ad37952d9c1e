"""Supabase user JWTs: asymmetric keys from the project's JWKS, or HS256 with its JWT secret."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import httpx
import jwt

log = logging.getLogger(__name__)

AUDIENCE = "authenticated"
# Supabase signs with ES256 or RS256 (JWKS) on new projects and HS256 (shared secret) on older
# ones. The algorithm is chosen by the key, never by the token alone (no algorithm confusion).
ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
_REQUIRED_CLAIMS = ["exp", "sub", "aud", "iss"]
# The auth server's clock and ours differ a little: `exp`, `nbf` and `iat` are checked with this
# much margin, so a token just issued is not "not yet valid" here.
CLOCK_LEEWAY_S = 60


class InvalidToken(Exception):
    """The token is not a valid user JWT of this project."""


class KeysUnavailable(Exception):
    """The project's signing keys cannot be fetched right now (the auth server is down or
    overloaded), so a token cannot be judged: retry after `retry_after_s`."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class JwksCache:
    """The project's public keys by `kid`, fetched off the event loop's critical path.

    An unknown `kid` (keys rotated) refetches, at most once per `min_refresh_s`, so that a
    flood of tokens with made-up kids cannot hammer the auth server; keys are refetched once
    they are older than `max_age_s` so that a revoked key stops being trusted.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        min_refresh_s: float = 30.0,
        max_age_s: float = 600.0,
    ) -> None:
        self._url = url
        self._http = httpx.AsyncClient(timeout=timeout_s)
        self._min_refresh_s = min_refresh_s
        self._max_age_s = max_age_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        # The last fetch failed in a way that passes (unreachable, 5xx, 429).
        self._outage = False
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key named `kid`; raises `InvalidToken` when the project has none by that name,
        `KeysUnavailable` when that cannot be told because the keys could not be fetched."""
        if self._stale() or kid not in self._keys:
            async with self._lock:  # concurrent misses share one fetch
                if self._stale() or (kid not in self._keys and self._may_refresh()):
                    await self._refresh()
        found = self._keys.get(kid)
        if found is None and self._outage:
            raise KeysUnavailable(
                "the project's signing keys could not be fetched; retry shortly",
                retry_after_s=self._retry_after_s(),
            )
        if found is None:
            raise InvalidToken("the token's signing key is not one of this project's")
        return found

    async def aclose(self) -> None:
        await self._http.aclose()

    def _stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > self._max_age_s

    def _may_refresh(self) -> bool:
        return self._fetched_at is None or (
            time.monotonic() - self._fetched_at >= self._min_refresh_s
        )

    def _retry_after_s(self) -> int:
        """Whole seconds until the keys may be fetched again (at least one)."""
        since = time.monotonic() - (self._fetched_at or 0.0)
        return max(1, math.ceil(self._min_refresh_s - since))

    async def _refresh(self) -> None:
        try:
            response = await self._http.get(self._url)
            response.raise_for_status()
            keys = _parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as e:
            # Keep the keys we had: a blip of the auth server should not log everyone out.
            log.warning("could not fetch the JWKS from %s: %s", self._url, e)
            self._outage = _passes(e)
            if not self._keys and not self._outage:
                # A 404 or a document without keys: a wrong SUPABASE_JWKS_URL, not an outage.
                raise InvalidToken("the project's signing keys could not be fetched") from e
            return
        finally:
            # Failures count as a fetch too, so a down auth server is not asked on every token.
            self._fetched_at = time.monotonic()
        self._outage = False
        self._keys = keys
        log.info("fetched %d signing keys from the JWKS", len(keys))


def _passes(error: Exception) -> bool:
    """Whether a failed JWKS fetch is an outage that passes (so the refusal is retryable)."""
    if isinstance(error, httpx.TransportError):  # unreachable, refused, timed out
        return True
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        return status >= 500 or status == 429
    return False


def _parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """The usable asymmetric keys of a JWKS document by `kid`; others are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the JWKS has no `keys` list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWKError:
            continue
        if key.algorithm_name in ASYMMETRIC_ALGORITHMS:
            keys[entry["kid"]] = key
    return keys


class SupabaseJwtVerifier:
    """Checks a user JWT's signature, `aud`, `iss` and `exp`, and gives its `sub`."""

    def __init__(
        self,
        *,
        issuer: str,
        jwks: JwksCache | None,
        jwt_secret: str | None,
    ) -> None:
        self._issuer = issuer
        self._jwks = jwks
        self._secret = jwt_secret

    async def user_id(self, token: str) -> str:
        """The user id (`sub`) of a valid token; raises `InvalidToken`, or `KeysUnavailable`
        when the keys to check it cannot be fetched."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise InvalidToken("the token is not a JWT") from e
        key, algorithm = await self._key_for(header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=AUDIENCE,
                issuer=self._issuer,
                leeway=CLOCK_LEEWAY_S,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as e:
            raise InvalidToken("the token has expired") from e
        except jwt.PyJWTError as e:
            raise InvalidToken(f"the token is not valid: {e}") from e
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("the token names no user")
        return subject

    async def aclose(self) -> None:
        if self._jwks is not None:
            await self._jwks.aclose()

    async def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        algorithm = header.get("alg")
        if algorithm == "HS256" and self._secret is not None:
            return self._secret, "HS256"
        if algorithm in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str):
                raise InvalidToken("the token names no signing key (kid)")
            key = await self._jwks.key(kid)
            if key.algorithm_name != algorithm:
                raise InvalidToken("the token's algorithm does not match its key")
            return key.key, algorithm
        raise InvalidToken(f"tokens signed with {algorithm!r} are not accepted")
