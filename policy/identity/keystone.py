"""Online token validation against Keystone, as keystonemiddleware does it:
GET /v3/auth/tokens?nocatalog with the gateway's own service token."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import httpx

from policy import http
from policy.config import Keystone
from policy.decision import Identity

_RENEW_MARGIN = 60  # seconds before expiry at which the service token is renewed
PROBE_SECONDS = 5  # timeout of a health probe


class InvalidToken(Exception):
    """Keystone says the token is not valid (unknown, expired or revoked)."""


class Unavailable(Exception):
    """A dependency could not answer; the decision fails closed (503)."""

    def __init__(self, dependency: str, detail: str):
        super().__init__(f"{dependency}: {detail}")
        self.dependency, self.detail = dependency, detail


def parse_expiry(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def identity_from(body: dict) -> Identity:
    token = body["token"]
    project = token.get("project")
    if not project:
        raise InvalidToken("the token is not scoped to a project")
    return Identity(
        user_id=token["user"]["id"],
        project_id=project["id"],
        roles=frozenset(role["name"] for role in token.get("roles", [])),
        expires_at=parse_expiry(token["expires_at"]),
    )


class KeystoneClient:
    method = "keystone"

    def __init__(self, conf: Keystone, client: httpx.AsyncClient | None = None):
        self.conf = conf
        self.tls = http.verifying(conf.ca_file)
        self._http = client or http.client(conf.timeout_seconds, self.tls)
        self._service_token: str | None = None
        self._service_expires = 0.0
        self._login = asyncio.Lock()

    async def _request(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            response = await self._http.request(method, self.conf.url + path, **kw)
        except http.ERRORS as e:
            raise Unavailable("keystone", f"{type(e).__name__}: {e}") from None
        if response.status_code >= 500:
            raise Unavailable("keystone", f"answered {response.status_code}")
        return response

    async def up(self) -> bool:
        """Keystone answers, through the same client and TLS as the decisions."""
        try:
            await self._request("GET", "/v3", timeout=PROBE_SECONDS)
        except Unavailable:
            return False
        return True

    async def service_token(self, renew: bool = False) -> str:
        async with self._login:
            if renew or not self._service_token or time.time() > self._service_expires - _RENEW_MARGIN:
                await self._authenticate()
            assert self._service_token
            return self._service_token

    def _auth(self) -> tuple[str, dict]:
        """Who the gateway logs in as, and the body that does it."""
        c = self.conf
        try:
            secret = c.secret
        except OSError as e:  # the secret file was readable at start
            raise Unavailable("keystone", f"cannot read the service secret: {e.strerror}") from None
        if c.application_credential_id:  # scoped to its own project
            return (f"application credential {c.application_credential_id}", {"auth": {"identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": c.application_credential_id, "secret": secret}}}})
        return (repr(c.username), {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "password": secret, "domain": {"name": c.user_domain}}}},
            "scope": {"project": {"name": c.project, "domain": {"name": c.project_domain}}},
        }})

    async def _authenticate(self) -> None:
        who, body = self._auth()
        response = await self._request("POST", "/v3/auth/tokens?nocatalog", json=body)
        if response.status_code != 201:
            # The gateway's own credentials are wrong: no decision is possible.
            raise Unavailable("keystone", f"service login as {who} failed with {response.status_code}")
        self._service_token = response.headers["X-Subject-Token"]
        self._service_expires = parse_expiry(response.json()["token"]["expires_at"])

    async def validate(self, token: str) -> Identity:
        for renew in (False, True):
            response = await self._request("GET", "/v3/auth/tokens?nocatalog", headers={
                "X-Auth-Token": await self.service_token(renew), "X-Subject-Token": token})
            if response.status_code == 200:
                return identity_from(response.json())
            if response.status_code in (401, 403) and not renew:
                continue  # our service token lapsed or was revoked: log in again, once
            if response.status_code == 404:
                raise InvalidToken("the token is unknown, expired or revoked")
            raise Unavailable("keystone", f"token validation answered {response.status_code}")
        raise Unavailable("keystone", "the gateway's service token is refused")
