"""The composition root: builds glance-gate's addons and their shared services,
and installs the `wire` patches, once. `glance-gate` (process/main.py) and
mitmdump (addons/script.py) both start from here; a test builds any addon alone.

The gate loads the config (its `configure`); the others read it through a
getter, and end a request through the one ending service, never through the gate."""

from __future__ import annotations

from addons import metrics, wire
from addons.client_bounds import ClientBounds
from addons.ending import Ending
from addons.forwarded import ForwardedHeaders
from addons.glance_gate import GlanceGate, trailers_refusal
from addons.tls import ListenerTls
from addons.trusted_auth import StripIdentity, TrustedAuth
from policy.config import Config
from policy.identity import TokenValidator


def compose(metrics_: metrics.Metrics | None = None, lean: bool = False) -> tuple[list, Ending]:
    """The addons in the order mitmproxy runs them (the identity strip first, on
    every request, independent of the gate), and the ending service. lean: the
    lean Master's (process/main.py), which also skips mitmproxy's type checks."""
    install_patches()
    if lean:
        wire.skip_message_typechecks()

    def config() -> Config | None:  # called from hooks, once configure has run
        return gate.config

    def tokens() -> TokenValidator:
        assert gate.gate
        return gate.gate.tokens

    ending = Ending(config)
    gate = GlanceGate(ending, TrustedAuth(ending, tokens), ListenerTls(config), ForwardedHeaders(), metrics_)
    return [StripIdentity(ending, config), ClientBounds(ending, config), gate], ending


def install_patches() -> None:
    """mitmproxy's behaviour the gateway changes (addons/wire.py); each patch
    installs itself once, whoever calls this."""
    wire.refuse_request_trailers(trailers_refusal)
    wire.retry_on_fresh_connection()
    wire.install_pump(metrics.pumped_bytes.inc)
