"""The ledger replicas share: one Redis, every operation one Lua script
(ledger.lua), so seed, reserve, extend, commit, release and adjust are atomic
across gateways, and leases run on Redis' clock."""

from __future__ import annotations

import uuid
from pathlib import Path

import redis.asyncio as redis
from redis.exceptions import RedisError

from policy.config import UNLIMITED
from policy.exceptions import Unavailable
from policy.quota.ledger import IDLE_SECONDS, Grant, Ledger, Reading, Unseeded

SCRIPT = (Path(__file__).parent / "ledger.lua").read_text()
LEASE_RAN_OUT, UNSEEDED = -1, -2


class RedisLedger(Ledger):
    def __init__(self, url: str, timeout: float, lease_seconds: float, keep_commits_seconds: float):
        super().__init__(lease_seconds, keep_commits_seconds)
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._redis.register_script(SCRIPT)

    @staticmethod
    def _key(project: str, name: str) -> str:
        return f"glance-gate:quota:{{{project}}}:{name}"

    async def _call(self, op: str, project: str, hold: str = "", amount: int = 0, generation: int = 0,
                    limit: int = UNLIMITED, max_uploads: int = UNLIMITED, flag: bool = False):
        keys = [self._key(project, name) for name in ("held", "committed", "generation", "usage")]
        args = [op, hold, amount, generation, limit, max_uploads, int(flag),
                int(self.lease_seconds * 1000), int(self.keep_commits_seconds * 1000), IDLE_SECONDS * 1000]
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

    async def seed(self, project, usage, overwrite) -> int | None:
        held, correction = await self._call("seed", project, amount=usage.bytes, generation=usage.generation,
                                            flag=overwrite)
        return None if held < 0 else correction if held else 0

    async def _grant(self, op: str, *args, **kwargs) -> Grant | None:
        granted, used, uploads = await self._call(op, *args, **kwargs)
        if granted == UNSEEDED:
            raise Unseeded
        return None if granted == LEASE_RAN_OUT else Grant(granted, used, uploads)

    async def reserve(self, project, hold, amount, limit, max_uploads, partial) -> Grant:
        grant = await self._grant("reserve", project, hold, amount, limit=limit, max_uploads=max_uploads,
                                  flag=partial)
        assert grant is not None
        return grant

    async def extend(self, project, hold, amount, limit) -> Grant | None:
        return await self._grant("extend", project, hold, amount, limit=limit, flag=True)

    async def renew(self, project, hold) -> bool:
        return bool(await self._call("renew", project, hold))

    async def commit(self, project, hold, stored) -> None:
        await self._call("commit", project, hold, stored)

    async def release(self, project, hold) -> None:
        await self._call("release", project, hold)

    async def adjust(self, project, delta) -> None:
        await self._call("adjust", project, str(uuid.uuid4()), delta)

    async def read(self, project) -> Reading:
        usage, reserved, holds = await self._call("read", project)
        return Reading(None if usage < 0 else usage, reserved, holds)

    async def entries(self) -> list[str]:
        try:
            return sorted([k.decode()[len("glance-gate:quota:{"):-len("}:usage")]
                           async for k in self._redis.scan_iter(match="glance-gate:quota:{*}:usage", count=1000)])
        except (RedisError, OSError) as e:
            raise Unavailable("redis", f"{type(e).__name__}: {e}") from None

    async def claim(self, project, seconds) -> bool:
        try:
            return bool(await self._redis.set(self._key(project, "reconciling"), "1", nx=True,
                                              px=max(1, int(seconds * 1000))))
        except (RedisError, OSError) as e:
            raise Unavailable("redis", f"{type(e).__name__}: {e}") from None

    async def close(self) -> None:
        await self._redis.aclose()
