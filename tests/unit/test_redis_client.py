"""The Redis URL forms of the quota ledger (policy/redis_client.py): one
server, or the primary Redis Sentinel names; a malformed Sentinel URL says
what is wrong, and the form."""

from __future__ import annotations

import pytest

from policy import redis_client
from policy.redis_client import SENTINEL_FORM, SentinelURL


@pytest.mark.parametrize("url, parsed", [
    ("redis+sentinel://s1,s2:26380/glance-gate", SentinelURL((("s1", 26379), ("s2", 26380)), "glance-gate")),
    ("redis+sentinel://:p%40ss@s1/svc/2", SentinelURL((("s1", 26379),), "svc", 2, None, "p@ss")),
    ("redis+sentinel://gate:pw@[::1]:26379/my%20svc", SentinelURL((("::1", 26379),), "my svc", 0, "gate", "pw")),
])
def test_a_sentinel_url_names_the_sentinels_the_service_and_the_primarys_credentials(url, parsed):
    assert SentinelURL.parse(url) == parsed


@pytest.mark.parametrize("url, problem", [
    ("redis+sentinel://s1", "names no service"),
    ("redis+sentinel://s1/svc/x", "database 'x' is not a number"),
    ("redis+sentinel://s1/svc?x=1", "takes no query or fragment"),
    ("redis+sentinel://s1:port/svc", "sentinel 's1:port'"),
    ("redis+sentinel://,s1/svc", "sentinel '' is not host:port"),
])
def test_a_malformed_sentinel_url_says_what_is_wrong_and_the_form(url, problem):
    with pytest.raises(ValueError) as e:
        SentinelURL.parse(url)
    assert problem in str(e.value) and SENTINEL_FORM in str(e.value)


def test_which_urls_go_through_sentinel():
    assert redis_client.is_sentinel("redis+sentinel://s1/svc")
    assert not any(map(redis_client.is_sentinel, ["redis://h:6379/0", "rediss://h/0", "unix:///run/redis.sock"]))


def test_a_client_is_made_without_connecting():
    """The gateway starts with its Redis down: the first call fails closed, not the start."""
    for url in ("redis://127.0.0.1:1/0", "redis+sentinel://127.0.0.1:1/svc"):
        assert redis_client.connect(url, 0.5) is not None
