"""Which dependencies the health probes check (policy/health.py): those a
decision of the configured mode needs, and nothing else (the misconfigured
cases against the real stack are tests/test_health.py)."""

from __future__ import annotations

import asyncio

import pytest

from policy import health
from policy.exceptions import Unavailable
from tests.support.fakes import config

JWT = {"mode": "jwt", "trusted_auth": True, "jwks_url": "https://idp/jwks", "issuer": "https://idp",
       "audience": "glance"}


class Dependency:
    """Glance's probe, or a ledger's ping."""

    def __init__(self, answers: bool = True):
        self.answers = answers

    async def probe(self) -> None:
        pass

    async def ping(self) -> bool:
        return self.answers


@pytest.mark.parametrize("identity, quota, probed", [
    ({}, {}, ["keystone", "glance"]),
    ({"trusted_auth": True}, {}, ["keystone", "glance"]),
    (JWT, {}, ["glance"]),  # tokens checked with the IdP's keys, Glance trusts the gateway: no Keystone
    (JWT, {"keystone_limits": True}, ["keystone", "glance"]),  # limits are read from Keystone
    ({}, {"ledger": "redis", "redis_url": "redis://127.0.0.1:1/0"}, ["keystone", "glance", "redis"]),
])
def test_probes_are_what_a_decision_needs(identity, quota, probed):
    conf = config(100, identity=identity, **quota)
    assert list(health.probes(conf, keystone=None, glance=Dependency(), ledger=Dependency())) == probed


def test_a_ledger_that_does_not_answer_is_unavailable():
    conf = config(100, ledger="redis", redis_url="redis://127.0.0.1:1/0")
    probes = health.probes(conf, keystone=None, glance=Dependency(), ledger=Dependency(False))
    with pytest.raises(Unavailable, match="no answer to PING"):
        asyncio.run(probes["redis"]())
    asyncio.run(health.probes(conf, keystone=None, glance=Dependency(), ledger=Dependency())["redis"]())
