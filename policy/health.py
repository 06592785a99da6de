"""What the health probes check: that a decision would get what it needs from
each dependency, not merely that something answers there."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from policy.config import Config
from policy.exceptions import Unavailable
from policy.glance import GlanceClient
from policy.identity import KeystoneClient
from policy.quota.ledger import Ledger

Probe = Callable[[], Awaitable[None]]  # raises Unavailable, or Misconfigured


def probes(config: Config, keystone: KeystoneClient, glance: GlanceClient, ledger: Ledger) -> dict[str, Probe]:
    ident = config.identity
    validates = ident.mode == "keystone" or (ident.mode == "keystone-jws" and ident.jws_check == "confirm")
    logs_in = validates or not ident.trusted_auth or config.quota.keystone_limits
    targets: dict[str, Probe] = {}
    if logs_in:
        targets["keystone"] = lambda: keystone.probe(validate=validates)
    targets["glance"] = glance.probe
    if config.quota.ledger == "redis":
        targets["redis"] = lambda: _ping(ledger)
    return targets


async def _ping(ledger) -> None:
    if not await ledger.ping():
        raise Unavailable("redis", "no answer to PING")
