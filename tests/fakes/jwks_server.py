"""A fake Supabase Auth on a real loopback socket: serves the project's JWKS, counts fetches,
and mints user tokens signed with its ES256 keys (or an HS256 secret)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fakes.loopback_http import LoopbackHttpServer, QuietHandler

JWKS_PATH = "/auth/v1/.well-known/jwks.json"
HS256_SECRET = "test-project-jwt-secret-with-at-least-32-bytes"


def new_es256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class FakeSupabaseAuth(LoopbackHttpServer):
    """`{base_url}/auth/v1/.well-known/jwks.json`, with keys that a test can add or rotate."""

    def __init__(self) -> None:
        self._private: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._published: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.jwks_requests = 0
        # What the JWKS endpoint answers; a test sets 5xx for an outage of the auth server.
        self.jwks_status = 200
        self.kid = self.add_key()
        # `base_url` is what a test passes as SUPABASE_URL.
        super().__init__(self._handler(), name="fake-jwks")

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/auth/v1"

    def add_key(self) -> str:
        """Publish a new ES256 key (a rotation); return its kid."""
        kid = uuid.uuid4().hex
        private = new_es256_key()
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
        with self._lock:
            self._private[kid] = private
            self._published.append({**public, "kid": kid, "alg": "ES256", "use": "sig"})
        return kid

    def token(
        self,
        sub: str | None = "user-a",
        *,
        kid: str | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
        **claims: Any,
    ) -> str:
        """A user JWT signed with a published key (or `key`); `claims` override the defaults."""
        kid = kid or self.kid
        signer = key or self._private[kid]
        payload = self.claims(sub, **claims)
        return jwt.encode(payload, signer, algorithm="ES256", headers={"kid": kid})

    def hs256_token(self, sub: str = "user-a", *, secret: str = HS256_SECRET, **claims: Any) -> str:
        """A user JWT of an older project, signed with its shared JWT secret."""
        return jwt.encode(self.claims(sub, **claims), secret, algorithm="HS256")

    def claims(self, sub: str | None, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        values: dict[str, Any] = {
            "aud": "authenticated",
            "iss": self.issuer,
            "iat": now,
            "exp": now + 3600,
            "role": "authenticated",
        }
        if sub is not None:
            values["sub"] = sub
        values.update(overrides)
        return values

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                with fake._lock:
                    fake.jwks_requests += 1
                    status = fake.jwks_status
                    body = json.dumps({"keys": fake._published}).encode()
                if status != 200:
                    self.send_error(status)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
