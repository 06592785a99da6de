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
from policy.decision import Decision
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
# How long the gateway follows a change Glance makes in a background task.
FOLLOW_SECONDS = 300

# mitmproxy reads a socket 64 KiB at a time: with this much grant left and more
# on its way, the client is paused, so one read can never cross a grant that
# was about to grow.
HEADROOM = 256 * 1024


class HardQuota:
    def __init__(self, quota: Quota, limits: Limits, glance: GlanceClient, ledger: Ledger):
        self.quota, self.limits, self.glance, self.ledger = quota, limits, glance, ledger
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
        limit, cap = await self.limits.limit_for(owner), self.quota.max_uploads
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
            return None, rules.too_many_uploads(grant.uploads, cap)
        if not grant.bytes:
            return None, rules.quota_exceeded(grant.used, limit)
        return Hold(self, owner, hold_id, limit, grant, incremental=partial), None

    async def changing(self, image_id: str) -> Change | None:
        """What the image stores before a change (policy.routes.CHANGE) is
        forwarded; None when that cannot be read: the reconciliation sees it."""
        try:
            return Change(image_id, await self.glance.stored_bytes(image_id))
        except Unavailable as e:
            log.warning("cannot read image %s before its change, left to the reconciliation: %s", image_id, e)
            return None

    async def location_add(self, change: Change | None) -> Decision | None:
        """Before a location is added (POST /v2/images/{id}/locations): its data's
        size is unknown until Glance's task reads it from the store, so under a
        byte limit it is refused, unless quota.location_add = "allow"."""
        if self.quota.location_add == "allow":
            return None
        if change is None:
            return rules.unavailable("glance", "the image could not be read before its location was added")
        if change.before is None:
            return None  # no such image: Glance answers 404
        try:
            limit = await self.limits.limit_for(change.before[0])
        except Unavailable as e:
            return rules.unavailable(e.dependency, e.detail, e.reason)
        return None if limit == UNLIMITED else rules.unknown_size_location()

    async def follow(self, change: Change, poll_seconds: float = 0.5) -> None:
        """After Glance accepted a change that its task makes in the background
        (a location add: 202): once the task has let go of the image (its
        os_glance_import_task lock), or after FOLLOW_SECONDS, what the image
        stores goes into its owner's usage (`changed`). Later is the reconciliation's."""
        deadline = time.monotonic() + FOLLOW_SECONDS
        while time.monotonic() < deadline:
            try:
                image = await self.glance.service_image(change.image_id)
            except Unavailable:
                image = {}
            if image is None or (image and "os_glance_import_task" not in image):
                break
            await asyncio.sleep(poll_seconds)
        await self.changed(change)

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
        self.granted += grant.bytes
        self.used = grant.used
        self.exhausted = grant.bytes < self.step

    async def renew(self) -> bool:
        """False when the lease ran out, so the upload is no longer accounted for."""
        return await self.quota.ledger.renew(self.owner, self.id)

    async def settle(self, stored: bool, transferred: int | None = None) -> None:
        """Commit what Glance stored (the body's bytes, or all that was granted),
        release the rest."""
        if stored:
            await self.quota.ledger.commit(self.owner, self.id, self.granted if transferred is None else transferred)
        else:
            await self.quota.ledger.release(self.owner, self.id)
