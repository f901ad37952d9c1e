"""Who is calling: `AUTH_MODE=none` (everyone is the same anonymous owner), `api_key`, or
`supabase` (the project's user JWTs, see `app.services.jwt_auth`)."""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

from app.services.jwt_auth import InvalidToken, JwksCache, KeysUnavailable, SupabaseJwtVerifier
from app.settings import Settings

_JWKS_TIMEOUT_S = 5.0


class Unauthorized(Exception):
    """Missing or wrong credentials."""


class AuthUnavailable(Exception):
    """The credentials cannot be checked right now (the auth server is down): retry later."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Authenticator:
    """Maps a bearer token to the owner its sessions belong to."""

    def __init__(
        self,
        *,
        mode: str,
        api_keys: list[SecretStr],
        jwt_verifier: SupabaseJwtVerifier | None = None,
    ) -> None:
        self._mode = mode
        self._keys = [key.get_secret_value().encode() for key in api_keys]
        self._jwt = jwt_verifier

    @property
    def enabled(self) -> bool:
        return self._mode != "none"

    async def owner_of(self, token: str | None) -> str | None:
        """The owner id for `token` (None when auth is off); raises `Unauthorized`, or
        `AuthUnavailable` when the token cannot be checked now."""
        if not self.enabled:
            return None
        if not token:
            raise Unauthorized("a token is required")
        if self._jwt is not None:
            try:
                return "user:" + await self._jwt.user_id(token)
            except InvalidToken as e:
                raise Unauthorized(str(e)) from e
            except KeysUnavailable as e:
                raise AuthUnavailable(str(e), retry_after_s=e.retry_after_s) from e
        offered = token.encode()
        for key in self._keys:
            if hmac.compare_digest(offered, key):
                # Owners are named by a digest so that keys never reach the database or logs.
                return "key:" + hashlib.sha256(key).hexdigest()[:16]
        raise Unauthorized("the token is not valid")

    async def aclose(self) -> None:
        """Close the JWKS client, if any."""
        if self._jwt is not None:
            await self._jwt.aclose()


def create_authenticator(settings: Settings) -> Authenticator:
    """The authenticator that `AUTH_MODE` asks for (settings validation made it complete)."""
    if settings.auth_mode != "supabase":
        return Authenticator(mode=settings.auth_mode, api_keys=settings.api_keys)
    assert settings.supabase_url is not None  # the settings check it in supabase mode
    secret = settings.supabase_jwt_secret
    verifier = SupabaseJwtVerifier(
        issuer=f"{settings.supabase_url}/auth/v1",
        jwks=JwksCache(settings.jwks_url(), timeout_s=_JWKS_TIMEOUT_S),
        jwt_secret=secret.get_secret_value() if secret is not None else None,
    )
    return Authenticator(mode="supabase", api_keys=[], jwt_verifier=verifier)
