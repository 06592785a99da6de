"""Trusted-auth mode (`[identity] trusted_auth = true`): the gateway is the
authenticator of a Glance that runs without authtoken, and believes headers.

Two parts, on every request, not only uploads:
- StripIdentity, an addon of its own placed before GlanceGate: every identity
  header the client sent is removed first, whatever happens to the decision
  after it (mitmproxy skips an addon's later hooks, and its children, when
  one raises).
- TrustedAuth, called by GlanceGate once the request is allowed: the token
  is validated (an upload's was, by the gate) and the gateway's own identity
  headers are set, each exactly once (Glance would join duplicates into one
  value). A request without a valid token is refused with 401, as authtoken
  would; only version discovery and the health check pass without one,
  marked Invalid."""

from __future__ import annotations

from collections.abc import Callable

from mitmproxy import http

from addons import wire
from addons.ending import Ending
from addons.exchange import Exchange
from policy import decision as rules
from policy.decision import Identity
from policy.exceptions import InvalidToken, Unavailable
from policy.config import Config
from policy.identity import TokenValidator
from policy.identity.trusted import UNAUTHENTICATED_PATHS, identity_headers, is_identity_header
from policy.routes import normalize


class StripIdentity:
    def __init__(self, ending: Ending, config: Callable[[], Config | None]):
        self.ending, self.config = ending, config  # ending: if stripping fails

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        config = self.config()
        if config and not config.identity.trusted_auth:
            return  # Glance's authtoken removes them itself, and reads X-Service-Token
        try:
            headers = flow.request.headers
            for name in [name for name in headers if is_identity_header(name)]:
                del headers[name]
        except Exception:
            self.ending.internal_error(flow, "StripIdentity.requestheaders")


class TrustedAuth:
    def __init__(self, ending: Ending, tokens: Callable[[], TokenValidator]):
        self.ending, self.tokens = ending, tokens  # tokens: the validator of the config loaded now

    async def authenticate(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        """Sets the caller's identity headers, or refuses the request."""
        identity = await self._identity(flow, exchange)
        if not exchange.finished:
            flow.request.headers.update(identity_headers(identity))

    async def _identity(self, flow: http.HTTPFlow, exchange: Exchange) -> Identity | None:
        if exchange.verdict:  # an upload the gate allowed
            return exchange.verdict.identity
        tokens = flow.request.headers.get_all("x-auth-token")
        if not tokens and normalize(flow.request.path) in UNAUTHENTICATED_PATHS:
            return None
        wire.hold_client(flow)
        try:
            identity = await self.tokens().validate(tokens)
        except InvalidToken as e:
            self.ending.refuse(flow, exchange, rules.bad_token(str(e)))
            return None
        except Unavailable as e:
            self.ending.refuse(flow, exchange, rules.unavailable(e.dependency, e.detail, e.reason))
            return None
        wire.release_client(flow)
        return identity
