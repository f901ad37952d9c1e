"""Who is calling: `AUTH_MODE=none` (everyone is the same anonymous owner) or `api_key`."""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr


class Unauthorized(Exception):
    """Missing or wrong credentials."""


class Authenticator:
    """Maps a bearer token to the owner its sessions belong to."""

    def __init__(self, *, mode: str, api_keys: list[SecretStr]) -> None:
        self._mode = mode
        self._keys = [key.get_secret_value().encode() for key in api_keys]

    @property
    def enabled(self) -> bool:
        return self._mode != "none"

    def owner_of(self, token: str | None) -> str | None:
        """The owner id for `token` (None when auth is off); raises `Unauthorized`."""
        if not self.enabled:
            return None
        if not token:
            raise Unauthorized("a token is required")
        offered = token.encode()
        for key in self._keys:
            if hmac.compare_digest(offered, key):
                # Owners are named by a digest so that keys never reach the database or logs.
                return "key:" + hashlib.sha256(key).hexdigest()[:16]
        raise Unauthorized("the token is not valid")
