"""Reservations: what an upload may send, decided before it is forwarded.

Usage comes from Glance (cached briefly, invalidated by this gateway's own
commits); the ledger adds what is in flight and what was committed since the
reading began, and grants atomically."""

from __future__ import annotations

import time
import uuid
from collections.abc import Coroutine

from policy import decision as rules
from policy.config import UNLIMITED, Quota
from policy.decision import Decision
from policy.exceptions import Unavailable
from policy.glance import GlanceClient
from policy.quota.ledger import Grant, Ledger, Usage
from policy.quota.limits import Limits
from policy.singleflight import SingleFlight

# How long a commit counts on top of usage readings that may predate it. A
# growing upload may extend from a reading up to half that old: it then needs
# no new reading from Glance, whose workers may all be busy with uploads.
KEEP_COMMITS_SECONDS = 600
EXTEND_READING_SECONDS = KEEP_COMMITS_SECONDS / 2

# mitmproxy reads a socket 64 KiB at a time: with this much grant left and more
# on its way, the client is paused, so one read can never cross a grant that
# was about to grow.
HEADROOM = 256 * 1024


class HardQuota:
    def __init__(self, quota: Quota, limits: Limits, glance: GlanceClient, ledger: Ledger):
        self.quota, self.limits, self.glance, self.ledger = quota, limits, glance, ledger
        self._usage: dict[str, tuple[Usage, float]] = {}
        self._invalidated: set[str] = set()  # a reading older than this gateway's last commit
        self._readings: SingleFlight[Usage] = SingleFlight()

    async def usage(self, project: str, max_age: float | None = None) -> Usage:
        """A new reservation wants a fresh reading; a growing one takes an older one
        (max_age), which the ledger's recent commits complete."""
        cached, at = self._usage.get(project, (None, 0.0))
        fresh = max_age is not None or project not in self._invalidated
        if cached and fresh and time.monotonic() - at < (max_age or self.quota.usage_cache_seconds):
            return cached
        return await self._readings.run(project, lambda: self._read(project))

    async def _read(self, project: str) -> Usage:
        """One reading at a time per project, shared by whoever wants it meanwhile:
        a reading begun before a commit is safe, as its generation predates it."""
        started = time.monotonic()
        self._invalidated.discard(project)  # a commit from now on invalidates this reading
        generation = await self.ledger.generation(project)  # before Glance: see ledger.py
        usage = Usage(await self.glance.usage(project), generation)
        self._usage[project] = (usage, started)
        return usage

    def invalidate_usage(self, project: str) -> None:
        self._invalidated.add(project)

    async def reserve(self, owner: str, size: int | None) -> tuple[Hold | None, Decision | None]:
        """A hold of `size` bytes, or of a first step when the size is unknown;
        no hold when the project has neither a byte limit nor an uploads cap."""
        limit, cap = await self.limits.limit_for(owner), self.quota.max_uploads
        if limit == UNLIMITED and cap == UNLIMITED:
            return None, None
        usage = await self.usage(owner) if limit != UNLIMITED else Usage(0, 0)
        partial = size is None
        amount = self.quota.chunk_bytes if partial else size
        hold_id = str(uuid.uuid4())
        grant = await self.ledger.reserve(owner, hold_id, amount, usage, limit, cap, partial)
        if cap != UNLIMITED and grant.uploads >= cap:
            return None, rules.too_many_uploads(grant.uploads, cap)
        if not grant.bytes:
            return None, rules.quota_exceeded(grant.used, limit)
        return Hold(self, owner, hold_id, limit, grant, incremental=partial), None


class Hold:
    """One upload's reservation: the bytes the ledger granted it so far."""

    def __init__(self, quota: HardQuota, owner: str, hold_id: str, limit: int, grant: Grant, incremental: bool):
        self.quota, self.owner, self.id, self.limit = quota, owner, hold_id, limit
        self.granted, self.used = grant.bytes, grant.used
        self.step = quota.quota.chunk_bytes
        # A fixed size is granted whole; a partial first step means the limit is reached.
        self.exhausted = not incremental or grant.bytes < self.step
        self.extending = False
        self.failure: Decision | None = None  # the ledger failed: no byte past the grant

    def check(self, transferred: int) -> Decision | None:
        if transferred <= self.granted:
            return None
        return self.failure or rules.quota_exceeded(self.used, self.limit)

    def wants_more(self, transferred: int) -> bool:
        return not self.exhausted and not self.extending and self.granted - transferred < self.step // 2

    def must_wait(self, transferred: int) -> bool:
        """The next read could cross a grant that is still growing."""
        return self.extending and self.granted - transferred < HEADROOM

    def extend(self) -> Coroutine[None, None, None]:
        """Marks the hold as growing at once, whenever the returned coroutine runs."""
        self.extending = True
        return self._extend()

    async def _extend(self) -> None:
        try:
            usage = await self.quota.usage(self.owner, max_age=EXTEND_READING_SECONDS)
            grant = await self.quota.ledger.extend(self.owner, self.id, self.step, usage, self.limit)
        except Unavailable as e:
            grant, self.failure = None, rules.unavailable(e.dependency, e.detail, e.reason)
        finally:
            self.extending = False
        if grant is None:
            self.exhausted = True
            self.failure = self.failure or rules.unavailable("quota ledger", "the reservation's lease ran out")
            return
        self.granted += grant.bytes
        self.used = grant.used
        self.exhausted = grant.bytes < self.step

    async def renew(self) -> bool:
        """False when the lease ran out, so the upload is no longer accounted for."""
        return await self.quota.ledger.renew(self.owner, self.id)

    async def settle(self, stored: bool) -> None:
        """Commit what Glance stored, release the rest."""
        if stored:
            await self.quota.ledger.commit(self.owner, self.id)
            self.quota.invalidate_usage(self.owner)
        else:
            await self.quota.ledger.release(self.owner, self.id)
