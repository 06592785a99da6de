"""The ledger replicas share: one Redis, every operation one Lua script
(ledger.lua), so seed, reserve, extend, commit, release and adjust are atomic
across gateways, and leases run on Redis' clock.

Through Redis Sentinel, each write is acknowledged by a replica (WAIT) before
anything is decided on it: a failover promotes the most advanced replica, so
it cannot lose a reservation that let an upload through, nor a commit. A
write no replica acknowledges in time counts as Redis down."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from redis.exceptions import NoScriptError, RedisError

from policy import redis_client
from policy.config import UNLIMITED
from policy.exceptions import Unavailable, Unseeded
from policy.quota.ledger import IDLE_SECONDS, Grant, Ledger, Reading, Turn

SCRIPT = (Path(__file__).parent / "ledger.lua").read_text()
LEASE_RAN_OUT, UNSEEDED = -1, -2
READS = frozenset({"generation"})
COMMIT_RETRY_SECONDS = 0.5


class RedisLedger(Ledger):
    def __init__(self, url: str, timeout: float, lease_seconds: float, keep_commits_seconds: float):
        super().__init__(lease_seconds, keep_commits_seconds)
        self._redis = redis_client.connect(url, timeout)
        self._script = self._redis.register_script(SCRIPT)
        # Replicas that must hold a write; WAIT's own timeout leaves the socket's time to answer.
        self._replicas = 1 if redis_client.is_sentinel(url) else 0
        self._wait_ms = max(1, int(timeout * 1000 / 2))

    @staticmethod
    def _key(project: str, name: str) -> str:
        return f"glance-gate:quota:{{{project}}}:{name}"

    async def _call(self, op: str, project: str, hold: str = "", amount: int = 0, generation: int = 0,
                    limit: int = UNLIMITED, streamed: int = 0, flag: bool = False, wait_seconds: float = 0,
                    first: bool = False):
        keys = [self._key(project, name) for name in ("held", "committed", "generation", "usage", "moved")]
        args = [op, hold, amount, generation, limit, streamed, int(flag),
                int(self.lease_seconds * 1000), int(self.keep_commits_seconds * 1000), IDLE_SECONDS * 1000,
                int(wait_seconds * 1000), int(first)]
        try:
            if self._replicas and op not in READS:
                return await self._replicated(keys, args)
            return await self._script(keys=keys, args=args)
        except (RedisError, OSError) as e:
            raise Unavailable("redis", f"{type(e).__name__}: {e}") from None

    async def _replicated(self, keys: list[str], args: list) -> object:
        """The script's answer once a replica holds its writes."""
        answer, acknowledged = await self._script_then_wait(keys, args)
        if isinstance(answer, NoScriptError):  # a new primary: the script never ran there
            await self._redis.script_load(SCRIPT)
            answer, acknowledged = await self._script_then_wait(keys, args)
        for result in (answer, acknowledged):
            if isinstance(result, Exception):
                raise result
        if acknowledged < self._replicas:
            raise Unavailable("redis", f"no replica acknowledged the write within {self._wait_ms} ms")
        return answer

    async def _script_then_wait(self, keys: list[str], args: list) -> list:
        """One pipeline, so WAIT runs on the connection that made the writes."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._script.sha, len(keys), *keys, *args)
            pipe.wait(self._replicas, self._wait_ms)
            return await pipe.execute(raise_on_error=False)

    async def ping(self) -> bool:
        """Through Sentinel, also that a replica acknowledges: else every write fails."""
        try:
            if not self._replicas:
                return bool(await self._redis.ping())
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.ping()
                pipe.wait(self._replicas, self._wait_ms)
                pong, acknowledged = await pipe.execute()
            return bool(pong) and acknowledged >= self._replicas
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

    async def reserve(self, project, hold, amount, limit, partial) -> Grant:
        grant = await self._grant("reserve", project, hold, amount, limit=limit, flag=partial)
        assert grant is not None
        return grant

    async def want(self, project, hold, amount, limit, streamed, blocked, wait_seconds, first) -> Turn | None:
        granted, others, cut = await self._call("want", project, hold, amount, limit=limit, streamed=streamed,
                                                flag=blocked, wait_seconds=wait_seconds, first=first)
        if granted == UNSEEDED:
            raise Unseeded
        return None if granted == LEASE_RAN_OUT else Turn(granted, others, bool(cut))

    async def extend(self, project, hold, amount, limit) -> Grant | None:
        return await self._grant("extend", project, hold, amount, limit=limit, flag=True)

    async def renew(self, project, hold, streamed=0) -> bool:
        return bool(await self._call("renew", project, hold, streamed=streamed))

    async def commit(self, project, hold, stored) -> None:
        """Retried while the hold's lease may run (Redis restarting, a failover):
        Glance stores the bytes, so losing the commit would undercount them
        until the reconciliation. A commit that did run finds no hold the
        next time, so a retry never counts twice."""
        deadline = time.monotonic() + self.lease_seconds
        while True:
            try:
                await self._call("commit", project, hold, stored)
                return
            except Unavailable:
                if time.monotonic() + COMMIT_RETRY_SECONDS > deadline:
                    raise
            await asyncio.sleep(COMMIT_RETRY_SECONDS)

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
