"""The ledger replicas share: one Redis, every operation one Lua script
(ledger.lua), so reserve, extend, commit and release are atomic across
gateways, and leases run on Redis' clock."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as redis
from redis.exceptions import RedisError

from policy.config import UNLIMITED
from policy.exceptions import Unavailable
from policy.quota.ledger import Grant, Ledger, Usage

SCRIPT = (Path(__file__).parent / "ledger.lua").read_text()


class RedisLedger(Ledger):
    def __init__(self, url: str, timeout: float, lease_seconds: float, keep_commits_seconds: float):
        super().__init__(lease_seconds, keep_commits_seconds)
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._redis.register_script(SCRIPT)

    async def _call(self, op: str, project: str, hold: str = "", amount: int = 0, usage: Usage = Usage(0, 0),
                    limit: int = UNLIMITED, max_uploads: int = UNLIMITED, partial: bool = False):
        keys = [f"glance-gate:quota:{{{project}}}:{name}" for name in ("held", "committed", "generation")]
        args = [op, hold, amount, usage.bytes, usage.generation, limit, max_uploads, int(partial),
                int(self.lease_seconds * 1000), int(self.keep_commits_seconds * 1000)]
        try:
            return await self._script(keys=keys, args=args)
        except (RedisError, OSError) as e:
            raise Unavailable("redis", f"{type(e).__name__}: {e}") from None

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def generation(self, project: str) -> int:
        return await self._call("generation", project)

    async def reserve(self, project, hold, amount, usage, limit, max_uploads, partial) -> Grant:
        return Grant(*await self._call("reserve", project, hold, amount, usage, limit, max_uploads, partial))

    async def extend(self, project, hold, amount, usage, limit) -> Grant | None:
        granted, used, uploads = await self._call("extend", project, hold, amount, usage, limit, partial=True)
        return None if granted < 0 else Grant(granted, used, uploads)

    async def renew(self, project, hold) -> bool:
        return bool(await self._call("renew", project, hold))

    async def commit(self, project, hold) -> None:
        await self._call("commit", project, hold)

    async def release(self, project, hold) -> None:
        await self._call("release", project, hold)

    async def close(self) -> None:
        await self._redis.aclose()
