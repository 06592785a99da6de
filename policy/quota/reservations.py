"""Reservations: what an upload may send, decided before it is forwarded,
against the usage the ledger holds (policy/quota/ledger.py) and what is in
flight. A project the ledger holds no usage for costs one listing at Glance,
shared by every decision waiting for it; the listings running at once are
bounded. A reconciliation re-lists each project now and then, off the
request path, and corrects the usage held."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass

from policy import decision as rules
from policy.config import UNLIMITED, Quota
from policy.decision import Decision, QuotaFigures
from policy.exceptions import Unavailable
from policy.glance import GlanceClient
from policy.quota.ledger import IDLE_SECONDS, Grant, Ledger, Unseeded, Usage
from policy.quota.limits import Limits
from policy.singleflight import SingleFlight

log = logging.getLogger("glance_gate.quota")

# How long a commit stays in the ledger's log, for a listing under way to add.
# A listing that took longer than half of it is not trusted.
KEEP_COMMITS_SECONDS = 600
LISTING_MAX_SECONDS = KEEP_COMMITS_SECONDS / 2

# mitmproxy reads a socket 64 KiB at a time: with this much grant left and more
# on its way, the client is paused, so one read can never cross a grant that
# was about to grow.
HEADROOM = 256 * 1024


class HardQuota:
    def __init__(self, quota: Quota, limits: Limits, glance: GlanceClient, ledger: Ledger):
        self.quota, self.limits, self.glance, self.ledger = quota, limits, glance, ledger
        self.dry_run = quota.enforce == "dry-run"  # quota refusals are only counted
        self._listings = asyncio.Semaphore(quota.max_listings)
        self._seeding: SingleFlight[None] = SingleFlight()  # project -> its one listing under way
        self._seen: dict[str, float] = {}  # project -> last decision: the ones to reconcile

    async def _listing(self, project: str) -> Usage:
        """One listing of the project's images, at most max_listings at once."""
        async with self._listings:
            started = time.monotonic()
            generation = await self.ledger.generation(project)  # before Glance: see ledger.py
            stored = await self.glance.usage(project)
        if (took := time.monotonic() - started) > LISTING_MAX_SECONDS:
            raise Unavailable("glance", f"listing the images of {project} took {took:.0f} s")
        return Usage(stored, generation)

    async def _seed(self, project: str) -> None:
        """Concurrent cold decisions for one project share one listing."""
        await self._seeding.run(project, lambda: self._seed_once(project))

    async def _seed_once(self, project: str) -> None:
        await self.ledger.seed(project, await self._listing(project), overwrite=False)

    async def ask(self, project: str, ask: Callable[[], Awaitable[Grant | None]]) -> Grant | None:
        """The ledger's answer, the project's usage seeded first if it holds none."""
        try:
            return await ask()
        except Unseeded:
            await self._seed(project)
        try:
            return await ask()
        except Unseeded:  # lost again at once: Redis restarted empty, say
            raise Unavailable("quota ledger", "the project's usage was lost while it was read") from None

    async def reserve(self, owner: str, size: int | None) -> tuple[Hold | None, Decision | None]:
        """A hold of `size` bytes, or of a first step when the size is unknown;
        no hold when the project has neither a byte limit nor an uploads cap."""
        limit, cap = await self.limits.limit_for(owner), await self.limits.limit_for(owner, rules.UPLOADS)
        if limit == UNLIMITED and cap == UNLIMITED:
            return None, None
        partial = size is None
        amount = self.quota.chunk_bytes if partial else size
        hold_id = str(uuid.uuid4())
        if limit != UNLIMITED:
            self._seen[owner] = time.monotonic()
        grant = await self.ask(owner, lambda: self.ledger.reserve(owner, hold_id, amount, limit, cap, partial))
        assert grant is not None
        if cap != UNLIMITED and grant.uploads >= cap:
            refusal = rules.quota_exceeded(QuotaFigures(rules.UPLOADS, owner, grant.uploads, cap, 1))
        elif not grant.bytes:
            # A body of unknown size needs one byte of room to start.
            refusal = rules.quota_exceeded(QuotaFigures(rules.BYTES_STORED, owner, grant.used, limit,
                                                        1 if partial else amount))
        else:
            return Hold(self, owner, hold_id, limit, grant, incremental=partial), None
        if not self.dry_run:
            return None, refusal
        # Dry-run: it passes, accounted like any upload, so later decisions count its bytes.
        grant = await self.ask(owner, lambda: self.ledger.reserve(owner, hold_id, amount, UNLIMITED, UNLIMITED,
                                                                  partial))
        assert grant is not None
        hold = Hold(self, owner, hold_id, UNLIMITED, grant, incremental=partial)
        hold.would_refuse = refusal
        return hold, None

    async def changing(self, image_id: str) -> Change | None:
        """What the image stores before a change (policy.routes.CHANGE) is
        forwarded; None when that cannot be read: the reconciliation sees it."""
        try:
            return Change(image_id, await self.glance.stored_bytes(image_id))
        except Unavailable as e:
            log.warning("cannot read image %s before its change, left to the reconciliation: %s", image_id, e)
            return None

    async def changed(self, change: Change) -> None:
        """Glance made the change (a delete, a store's copy removed, a location
        added, a new owner): what the image stores now, less what it stored
        before, goes into its owners' usage."""
        try:
            after = await self.glance.stored_bytes(change.image_id)
            deltas: dict[str, int] = {}
            for image, sign in ((change.before, -1), (after, 1)):
                if image and image[0]:
                    deltas[image[0]] = deltas.get(image[0], 0) + sign * image[1]
            for owner, delta in deltas.items():
                if delta:
                    await self.ledger.adjust(owner, delta)
        except Unavailable as e:
            log.warning("cannot account for the change of image %s, left to the reconciliation: %s",
                        change.image_id, e)

    async def reconcile(self, project: str, claim_seconds: float) -> int | None:
        """Re-lists the project and corrects the usage held: the correction
        (bytes), None when another gateway reconciles it or none was held."""
        if not await self.ledger.claim(project, claim_seconds):
            return None
        return await self.ledger.seed(project, await self._listing(project), overwrite=True)

    async def reconcile_forever(self, observe: Callable[[float, int], None]) -> None:
        """Every reconcile_seconds, each project a decision needed lately, one
        at a time; observe(seconds, correction) for each one reconciled."""
        period = self.quota.reconcile_seconds
        while True:
            await asyncio.sleep(period)
            for project, seen in list(self._seen.items()):
                if time.monotonic() - seen > IDLE_SECONDS:
                    del self._seen[project]
                    await self.ledger.forget(project)
                    continue
                started = time.monotonic()
                try:
                    # Claimed for most of a period: another replica's pass skips it.
                    correction = await self.reconcile(project, period * 0.8)
                except Unavailable as e:
                    log.warning("cannot reconcile the usage of %s: %s", project, e)
                    continue
                except Exception:  # the loop outlives any one project's failure
                    log.exception("reconciling the usage of %s failed", project)
                    continue
                if correction is not None:
                    observe(time.monotonic() - started, correction)
                    if correction:
                        log.info("usage of %s corrected by %+d bytes", project, correction)


@dataclass(frozen=True)
class Change:
    image_id: str
    before: tuple[str, int] | None  # owner, bytes stored; None: no such image


class Hold:
    """One upload's reservation: the bytes the ledger granted it so far."""

    def __init__(self, quota: HardQuota, owner: str, hold_id: str, limit: int, grant: Grant, incremental: bool):
        self.quota, self.owner, self.id, self.limit = quota, owner, hold_id, limit
        self.granted = grant.bytes
        self.others = grant.used  # what the project's other uploads and usage held at the last grant
        self.step = quota.quota.chunk_bytes
        # A fixed size is granted whole; a partial first step means the limit is reached.
        self.exhausted = not incremental or grant.bytes < self.step
        self.extending = False
        self.failure: Decision | None = None  # the ledger failed: no byte past the grant
        self.would_refuse: Decision | None = None  # dry-run: the quota refusal it passed, the first one

    def check(self, transferred: int) -> Decision | None:
        if transferred <= self.granted:
            return None
        if self.failure:
            return self.failure
        refusal = rules.quota_exceeded(
            QuotaFigures(rules.BYTES_STORED, self.owner, self.others, self.limit, transferred))
        if not self.quota.dry_run:
            return refusal
        # Dry-run: the upload goes on, its grant growing past the limit from now on.
        self.would_refuse = self.would_refuse or refusal
        self.limit, self.exhausted = UNLIMITED, False
        return None

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
        ledger = self.quota.ledger
        try:
            grant = await self.quota.ask(self.owner, lambda: ledger.extend(self.owner, self.id, self.step, self.limit))
        except Unavailable as e:
            grant, self.failure = None, rules.unavailable(e.dependency, e.detail, e.reason)
        finally:
            self.extending = False
        if grant is None:
            self.exhausted = True
            self.failure = self.failure or rules.unavailable("quota ledger", "the reservation's lease ran out")
            return
        self.others = grant.used - self.granted  # the ledger counted this hold's own grant too
        self.granted += grant.bytes
        self.exhausted = grant.bytes < self.step

    async def renew(self) -> bool:
        """False when the lease ran out, so the upload is no longer accounted for."""
        return await self.quota.ledger.renew(self.owner, self.id)

    async def settle(self, stored: bool, transferred: int | None = None) -> None:
        """Commit what Glance stored (the body's bytes, or all that was granted),
        release the rest."""
        if stored:
            if transferred is not None and transferred > self.granted:  # dry-run past the limit: all of it counts
                await self.quota.ledger.extend(self.owner, self.id, transferred - self.granted, UNLIMITED)
            await self.quota.ledger.commit(self.owner, self.id, self.granted if transferred is None else transferred)
        else:
            await self.quota.ledger.release(self.owner, self.id)
