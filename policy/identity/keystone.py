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
from policy.exceptions import InvalidToken, Unavailable

_RENEW_MARGIN = 60  # seconds before expiry at which the service token is renewed


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
        self.service_roles: frozenset[str] = frozenset()  # the service token's, once logged in

    async def _request(self, method: str, path: str, **kw) -> httpx.Response:
        return await http.call(self._http, "keystone", method, self.conf.url + path, **kw)

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
            fix = ("check [keystone] application_credential_id and application_credential_secret_file"
                   if self.conf.application_credential_id else
                   "check [keystone] username, password, project, user_domain and project_domain")
            raise http.refused("keystone", f"the service login as {who}", response, fix, "keystone.url")
        self._service_token = response.headers["X-Subject-Token"]
        token = response.json()["token"]
        self._service_expires = parse_expiry(token["expires_at"])
        self.service_roles = frozenset(role["name"] for role in token.get("roles", []))

    async def validate(self, token: str) -> Identity:
        response = await self._validate(token, renew=False)
        if response.status_code in (401, 403):  # our service token lapsed or was revoked: log in again, once
            response = await self._validate(token, renew=True)
        if response.status_code == 200:
            return identity_from(response.json())
        if response.status_code == 404:
            raise InvalidToken("the token is unknown, expired or revoked")
        raise http.refused("keystone", "token validation", response,
                           f"give the service user {self.conf.username!r} the service role "
                           "(Keystone's policy lets it validate tokens)", "keystone.url")

    async def _validate(self, token: str, renew: bool) -> httpx.Response:
        return await self._request("GET", "/v3/auth/tokens?nocatalog", headers={
            "X-Auth-Token": await self.service_token(renew), "X-Subject-Token": token})

    async def probe(self, validate: bool) -> None:
        """What decisions need: the service login, and (validate) the right to
        validate a token, the service's own. Raises Unavailable or Misconfigured."""
        token = await self.service_token()
        if validate:
            await self.validate(token)
