"""How the gateway reaches the Redis of its quota ledger: one server
(`redis://`, `rediss://`, `unix://`), or the primary that Redis Sentinel names
(`redis+sentinel://`), followed to the new one after a failover."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_FORM = "redis+sentinel://[[user]:password@]host:port[,host:port…]/service_name[/db]"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None  # of the primary and its replicas; sentinels are asked without one

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """ValueError naming what is wrong, and the form."""
        try:
            return cls._parse(url.removeprefix(SENTINEL_SCHEME))
        except ValueError as e:
            raise ValueError(f"{e} (the form is {SENTINEL_FORM})") from None

    @classmethod
    def _parse(cls, rest: str) -> SentinelURL:
        if "?" in rest or "#" in rest:
            raise ValueError("takes no query or fragment")
        netloc, _, path = rest.partition("/")
        userinfo, _, hosts = netloc.rpartition("@")
        sentinels = []
        for host in hosts.split(","):
            try:
                parts = urlsplit(f"//{host}")
                port = parts.port or SENTINEL_PORT
            except ValueError as e:
                raise ValueError(f"sentinel {host!r}: {e}") from None
            if not parts.hostname or parts.username is not None:
                raise ValueError(f"sentinel {host!r} is not host:port")
            sentinels.append((parts.hostname, port))
        service, _, db = path.partition("/")
        if not service:
            raise ValueError("names no service")
        if db and not db.isdigit():
            raise ValueError(f"database {db!r} is not a number")
        username, colon, password = userinfo.partition(":")
        return cls(tuple(sentinels), unquote(service), int(db or 0),
                   unquote(username) or None, unquote(password) if colon else None)


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME)


def connect(url: str, timeout: float) -> redis.Redis:
    """A client of the server, or of Sentinel's primary. Through Sentinel, a
    failed call is not resent: a call whose answer was lost may have run, and
    been replicated to the primary that a resend would reach (its caller fails
    closed instead); each new connection asks the sentinels for the primary."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    target = SentinelURL.parse(url)
    once = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": Retry(NoBackoff(), 0)}
    # The next sentinel is the retry of one that does not answer.
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=once)
    return sentinel.master_for(target.service, db=target.db, username=target.username, password=target.password,
                               **once)
