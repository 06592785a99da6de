"""Tokens the tests forge or sign themselves, and a JWKS endpoint on loopback
that plays an OpenID Connect provider (keys can be rotated, or taken down)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict) -> str:
    """`alg: none`: no signature at all."""
    return f'{b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())}.{b64(json.dumps(claims).encode())}.'


def hs256_with(secret: bytes, claims: dict, header: dict | None = None) -> str:
    """HS256 keyed with the verifier's PUBLIC key: the classic algorithm-confusion forgery."""
    signing_input = (f'{b64(json.dumps({"alg": "HS256", "typ": "JWT", **(header or {})}).encode())}.'
                     f'{b64(json.dumps(claims).encode())}')
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def tampered(token: str, **changes) -> str:
    """The same signature over a different payload."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{b64(json.dumps({**claims, **changes}).encode())}.{signature}"


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


class Provider:
    """An identity provider: signs ES256 JWTs and serves its JWKS at /jwks."""

    issuer = "https://idp.example.test"
    audience = "glance"

    def __init__(self) -> None:
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.down = False
        self.fetches = 0
        self.rotate()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                if provider.down:
                    self.send_error(503)
                    return
                body = json.dumps(provider.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rotate(self) -> str:
        """A new signing key, published next to the old ones; returns its kid."""
        kid = f"key-{len(self.keys) + 1}"
        self.keys[kid] = new_key()
        self.kid = kid
        return kid

    def jwks(self) -> dict:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "ES256"})
        return {"keys": keys}

    def token(self, user: dict, roles=("member", "reader"), kid: str | None = None, **claims) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": self.audience, "sub": user["user_id"],
                "project_id": user["project_id"], "roles": list(roles), "iat": now, "exp": now + 600,
                **claims}
        kid = kid or self.kid
        return jwt.encode(body, self.keys[kid], algorithm="ES256", headers={"kid": kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
