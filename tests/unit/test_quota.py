"""The hard quota as config.toml builds it (policy/quota/__init__.py): the
ledger it names, and limits from config.toml or Keystone."""

from __future__ import annotations

import asyncio

import pytest

from policy.exceptions import Unavailable
from policy.quota import hard_quota, services
from policy.quota.ledger import MemoryLedger
from policy.quota.redis_ledger import RedisLedger
from tests.support.fakes import config


def test_the_ledger_config_toml_names():
    assert type(hard_quota(config(100), glance=None, service_token=None).ledger) is MemoryLedger
    shared = hard_quota(config(100, ledger="redis", redis_url="redis://127.0.0.1:1/0"), glance=None,
                        service_token=None)
    assert type(shared.ledger) is RedisLedger


def test_services_share_one_glance_and_read_limits_from_keystone_when_told():
    """config.toml's keystone (http://keystone) does not answer here: a limit read there fails closed."""
    _, glance, quota = services(config(100, keystone_limits=True))
    assert quota.glance is glance
    with pytest.raises(Unavailable) as e:
        asyncio.run(quota.limits.limit_for("p"))
    assert e.value.dependency == "keystone"
    _, _, local = services(config(100))
    assert asyncio.run(local.limits.limit_for("p")) == 100
