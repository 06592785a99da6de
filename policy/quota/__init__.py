"""The hard quota: limits, and a ledger of each project's usage and of the
reservations of uploads in flight, shared by every replica of the gateway."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from policy import http
from policy.config import Config
from policy.glance import GlanceClient
from policy.identity import KeystoneClient, modes
from policy.quota.ledger import Ledger, MemoryLedger
from policy.quota.limits import Limits
from policy.quota.redis_ledger import RedisLedger
from policy.quota.reservations import KEEP_COMMITS_SECONDS, HardQuota


def services(config: Config) -> tuple[KeystoneClient, GlanceClient, HardQuota]:
    """Keystone, Glance and the quota, as a gateway (or an operator's command) talks to them."""
    gw = config.gateway
    keystone = KeystoneClient(config.keystone)
    glance = GlanceClient(gw.upstream, modes.credentials(config, keystone), timeout=gw.upstream_timeout_seconds,
                          tls=http.verifying(gw.upstream_ca_file, gw.upstream_client_cert_file,
                                             gw.upstream_client_key_file))
    return keystone, glance, hard_quota(config, glance, keystone.service_token)


def hard_quota(config: Config, glance: GlanceClient, service_token: Callable[[], Awaitable[str]]) -> HardQuota:
    q = config.quota
    limits = (Limits(q, config.keystone.url, service_token,
                     http.client(config.keystone.timeout_seconds, http.verifying(config.keystone.ca_file)))
              if q.keystone_limits else Limits(q))
    keep = KEEP_COMMITS_SECONDS
    ledger: Ledger = (RedisLedger(q.redis_url, q.redis_timeout_seconds, q.lease_seconds, keep)
                      if q.ledger == "redis" else MemoryLedger(q.lease_seconds, keep))
    return HardQuota(q, limits, glance, ledger)
