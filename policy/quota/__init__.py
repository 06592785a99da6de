"""The hard quota: limits, usage read from Glance, and a ledger of the
reservations of uploads in flight, shared by every replica of the gateway."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from policy import http
from policy.config import Config
from policy.glance import GlanceClient
from policy.quota.ledger import Ledger, MemoryLedger
from policy.quota.limits import Limits
from policy.quota.redis_ledger import RedisLedger
from policy.quota.reservations import KEEP_COMMITS_SECONDS, HardQuota


def hard_quota(config: Config, glance: GlanceClient, service_token: Callable[[], Awaitable[str]]) -> HardQuota:
    q = config.quota
    limits = (Limits(q, config.keystone.url, service_token,
                     http.client(config.keystone.timeout_seconds, http.verifying(config.keystone.ca_file)))
              if q.keystone_limits else Limits(q))
    # A commit counts on top of any usage reading that may predate it: at least as
    # long as a reading stays cached, plus the time Glance may take to answer it.
    keep = max(KEEP_COMMITS_SECONDS, q.usage_cache_seconds + config.gateway.upstream_timeout_seconds + 5)
    ledger: Ledger = (RedisLedger(q.redis_url, q.redis_timeout_seconds, q.lease_seconds, keep)
                      if q.ledger == "redis" else MemoryLedger(q.lease_seconds, keep))
    return HardQuota(q, limits, glance, ledger)
