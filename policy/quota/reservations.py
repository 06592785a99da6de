"""Reservations: what an upload may send, decided before it is forwarded,
against the usage the ledger holds (policy/quota/ledger.py) and what is in
flight. A project the ledger holds no usage for costs one listing at Glance,
shared by every decision waiting for it; the listings running at once are
bounded. A reconciliation re-lists each project now and then, off the
request path, and corrects the usage held.

Each of Glance's resources is its own entry in the ledger (`key`): the bytes
stored (the project's id, as before), the bytes staged, the images, and the
uploads in flight (reservations only, never committed)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass

from policy import decision as rules
from policy.config import UNLIMITED, Quota
from policy.exceptions import Unavailable, Unseeded
from policy.glance import GlanceClient
from policy.quota.ledger import IDLE_SECONDS, Grant, Ledger, Turn, Usage
from policy.quota.limits import Limits
from policy.refusal import QuotaFigures, Refusal
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

# An upload of unknown size out of room asks again this often (doubling) while it
# waits: room is handed out by the ledger between its calls (ledger.py).
WAIT_FIRST_SECONDS, WAIT_MAX_SECONDS = 0.05, 0.4

# An import's staged data counts until Glance has imported it: its image is
# watched this often, for at most this long (then the reconciliation sees it).
IMPORT_POLL_SECONDS = 1
IMPORT_WATCH_SECONDS = 600


def key(project: str, resource: str) -> str:
    """The ledger's entry of a project's resource; the bytes stored keep the bare project id."""
    return project if resource == rules.BYTES_STORED else f"{project}/{resource}"


def split_key(entry: str) -> tuple[str, str]:
    project, _, resource = entry.partition("/")
    return project, resource or rules.BYTES_STORED


class HardQuota:
    def __init__(self, quota: Quota, limits: Limits, glance: GlanceClient, ledger: Ledger):
        self.quota, self.limits, self.glance, self.ledger = quota, limits, glance, ledger
        self.dry_run = quota.enforce == "dry-run"  # quota refusals are only counted
        self._listings = asyncio.Semaphore(quota.max_listings)
        self._seeding: SingleFlight[None] = SingleFlight()  # entry -> its one listing under way
        self._seen: dict[str, float] = {}  # ledger entry -> last decision: the ones to reconcile
        # (project, resource, usage/limit or None when below quota.warn_ratio): the near-limit gauge
        self.near_limit: Callable[[str, str, float | None], None] = lambda project, resource, ratio: None
        # Whether any project may have an image_count_total limit: creates are decided only then.
        self.limits_images = quota.keystone_limits or quota.max_images != UNLIMITED

    async def _listing(self, entry: str) -> Usage:
        """One listing of the project's images, at most max_listings at once."""
        project, resource = split_key(entry)
        if resource == rules.UPLOADS:  # in flight only: nothing to list
            return Usage(0, 0)
        async with self._listings:
            started = time.monotonic()
            generation = await self.ledger.generation(entry)  # before Glance: see ledger.py
            used = await self.glance.usage(project, resource)
        if (took := time.monotonic() - started) > LISTING_MAX_SECONDS:
            raise Unavailable("glance", f"listing the images of {project} took {took:.0f} s")
        return Usage(used, generation)

    async def _seed(self, entry: str) -> None:
        """Concurrent cold decisions for one entry share one listing."""
        await self._seeding.run(entry, lambda: self._seed_once(entry))

    async def _seed_once(self, entry: str) -> None:
        await self.ledger.seed(entry, await self._listing(entry), overwrite=False)

    async def ask[T](self, entry: str, ask: Callable[[], Awaitable[T]]) -> T:
        """The ledger's answer, the entry's usage seeded first if it holds none."""
        try:
            return await ask()
        except Unseeded:
            await self._seed(entry)
        try:
            return await ask()
        except Unseeded:  # lost again at once: Redis restarted empty, say
            raise Unavailable("quota ledger", "the project's usage was lost while it was read") from None

    async def _grant(self, owner: str, resource: str, hold_id: str, amount: int, partial: bool
                     ) -> tuple[Grant, int, Refusal | None]:
        """A reservation of the resource, its limit, and the refusal when it does
        not fit; in dry-run, a refused one is reserved without a limit."""
        entry, limit = key(owner, resource), await self.limits.limit_for(owner, resource)
        if limit != UNLIMITED and resource != rules.UPLOADS:
            self._seen[entry] = time.monotonic()
        if partial:
            turn = await self.waiting(entry, hold_id, amount, limit)
            grant = Grant(turn.granted, turn.others, 0)
        else:
            grant = await self.ask(entry, lambda: self.ledger.reserve(entry, hold_id, amount, limit, False))
        self.observe(owner, resource, grant.used + grant.bytes, limit)
        if grant.bytes:
            return grant, limit, None
        # A body of unknown size needs one byte of room to start.
        refusal = rules.quota_exceeded(QuotaFigures(resource, owner, grant.used, limit, 1 if partial else amount))
        if not self.dry_run:
            return grant, limit, refusal
        grant = await self.ask(entry, lambda: self.ledger.reserve(entry, hold_id, amount, UNLIMITED, partial))
        return grant, UNLIMITED, refusal

    async def reserve(self, owner: str, size: int | None, resource: str = rules.BYTES_STORED,
                      upload: bool = True) -> tuple[Hold | None, Refusal | None]:
        """A hold of `size` of the resource (bytes, or one image), or of a first
        step when the size is unknown; an upload also takes one of the project's
        uploads in flight. No hold when no limit applies. In dry-run, never a
        refusal: the hold carries the one it passed (`would_refuse`)."""
        cap = await self.limits.limit_for(owner, rules.UPLOADS) if upload else UNLIMITED
        if await self.limits.limit_for(owner, resource) == UNLIMITED and cap == UNLIMITED:
            return None, None
        hold_id = str(uuid.uuid4())
        slot = would_refuse = None
        if cap != UNLIMITED:
            _, _, would_refuse = await self._grant(owner, rules.UPLOADS, hold_id, 1, partial=False)
            if would_refuse and not self.dry_run:
                return None, would_refuse
            slot = key(owner, rules.UPLOADS)
        partial = size is None
        try:
            grant, limit, refusal = await self._grant(owner, resource, hold_id,
                                                      self.quota.chunk_bytes if partial else size, partial)
        except BaseException:
            if slot:
                await self.ledger.release(slot, hold_id)
            raise
        if refusal and not self.dry_run:
            if slot:
                await self.ledger.release(slot, hold_id)
            return None, refusal
        hold = Hold(self, owner, resource, hold_id, limit, grant, incremental=partial, slot=slot)
        hold.would_refuse = would_refuse or refusal
        return hold, None

    async def waiting(self, entry: str, hold_id: str, amount: int, limit: int) -> Turn:
        """A first step for an upload of unknown size, which holds nothing and
        has sent nothing (its client paused): once the ledger's schedule gives
        it room, or chooses it to give way (at once when every upload of the
        project is blocked, as when none other is in flight)."""
        pause, first = WAIT_FIRST_SECONDS, True
        while True:
            turn = await self.ask(entry, lambda: self.ledger.want(entry, hold_id, amount, limit, 0, True,
                                                                  self.quota.wait_seconds, first))
            if turn is None:  # its lease ran out between two asks: the ledger lost it
                raise Unavailable("quota ledger", "the reservation was lost while it waited for room")
            if turn.granted or turn.cut:
                return turn
            first = False
            await asyncio.sleep(pause)
            pause = min(pause * 2, WAIT_MAX_SECONDS)

    def observe(self, owner: str, resource: str, used: int, limit: int) -> None:
        """Usage and reservations against the limit, for the near-limit gauge."""
        ratio = used / limit if limit > 0 else (None if limit == UNLIMITED else 1.0)
        self.near_limit(owner, resource, ratio if ratio is not None and ratio >= self.quota.warn_ratio else None)

    async def changing(self, image_id: str) -> Change | None:
        """What the image counts for before a change (policy.routes.CHANGE) is
        forwarded; None when that cannot be read: the reconciliation sees it."""
        try:
            return Change(image_id, await self.glance.footprint(image_id))
        except Unavailable as e:
            log.warning("cannot read image %s before its change, left to the reconciliation: %s", image_id, e)
            return None

    async def location_add(self, change: Change | None) -> Refusal | None:
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

    async def changed(self, change: Change, resources: frozenset[str] | None = None) -> None:
        """Glance made the change (a delete, a store's copy removed, a location
        added, a new owner, an import done): what the image counts for now,
        less what it counted for before, goes into its owners' usage, for each
        resource (or only `resources`)."""
        try:
            after = await self.glance.footprint(change.image_id)
            deltas: dict[str, int] = {}
            for image, sign in ((change.before, -1), (after, 1)):
                if image and image[0]:
                    for resource, n in image[1].items():
                        if resources is None or resource in resources:
                            entry = key(image[0], resource)
                            deltas[entry] = deltas.get(entry, 0) + sign * n
            for entry, delta in deltas.items():
                if delta:
                    await self.ledger.adjust(entry, delta)
        except Unavailable as e:
            log.warning("cannot account for the change of image %s, left to the reconciliation: %s",
                        change.image_id, e)

    async def watch_import(self, image_id: str) -> None:
        """A glance-direct import began: its staged bytes count until Glance
        has taken the image out of staging (imported it, or killed it)."""
        if (change := await self.changing(image_id)) is None:
            return
        deadline = time.monotonic() + IMPORT_WATCH_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(IMPORT_POLL_SECONDS)
            try:
                now = await self.glance.footprint(image_id)
            except Unavailable:
                continue
            if not now or not now[1][rules.BYTES_STAGED]:
                await self.changed(change, frozenset({rules.BYTES_STAGED}))
                return

    async def reconcile(self, entry: str, claim_seconds: float | None) -> int | None:
        """Re-lists the entry's project and corrects the usage held: the
        correction, None when another gateway reconciles it or none was held.
        claim_seconds None: now, whoever else does (an operator's)."""
        if claim_seconds is not None and not await self.ledger.claim(entry, claim_seconds):
            return None
        correction = await self.ledger.seed(entry, await self._listing(entry), overwrite=True)
        project, resource = split_key(entry)
        reading = await self.ledger.read(entry)
        self.observe(project, resource, (reading.usage or 0) + reading.reserved,
                     await self.limits.limit_for(project, resource))
        return correction

    async def reconcile_forever(self, observe: Callable[[float, int], None]) -> None:
        """Every reconcile_seconds, each entry a decision needed lately, one at
        a time; observe(seconds, correction) for each bytes-stored one reconciled."""
        period = self.quota.reconcile_seconds
        while True:
            await asyncio.sleep(period)
            for entry, seen in list(self._seen.items()):
                if time.monotonic() - seen > IDLE_SECONDS:
                    del self._seen[entry]
                    await self.ledger.forget(entry)
                    continue
                started = time.monotonic()
                try:
                    # Claimed for most of a period: another replica's pass skips it.
                    correction = await self.reconcile(entry, period * 0.8)
                except Unavailable as e:
                    log.warning("cannot reconcile the usage of %s: %s", entry, e)
                    continue
                except Exception:  # the loop outlives any one project's failure
                    log.exception("reconciling the usage of %s failed", entry)
                    continue
                if correction is not None:
                    if split_key(entry)[1] == rules.BYTES_STORED:
                        observe(time.monotonic() - started, correction)
                    if correction:
                        log.info("usage of %s corrected by %+d", entry, correction)


@dataclass(frozen=True)
class Change:
    image_id: str
    before: tuple[str, dict[str, int]] | None  # owner, what it counts for; None: no such image


class Hold:
    """One request's reservation: what the ledger granted it so far (bytes,
    or one image), and its slot among the project's uploads in flight. A body
    of unknown size asks for a step ahead of its end; with no room it goes on
    to its grant's end, then waits, its client paused, for the ledger's
    schedule to give it room or to choose it to give way (`_give_way`)."""

    def __init__(self, quota: HardQuota, owner: str, resource: str, hold_id: str, limit: int, grant: Grant,
                 incremental: bool, slot: str | None = None):
        self.quota, self.owner, self.resource, self.id, self.limit = quota, owner, resource, hold_id, limit
        self.entry, self.slot = key(owner, resource), slot
        self.granted = grant.bytes
        self.others = grant.used  # what the project's other requests and usage held at the last grant
        self.step = quota.quota.chunk_bytes
        self.transferred = 0
        self.grows = incremental  # a body of unknown size: granted in steps as it streams
        self.exhausted = not incremental  # a fixed size is granted whole
        self.extending = False
        self.failure: Refusal | None = None  # the ledger failed: no byte past the grant
        self.would_refuse: Refusal | None = None  # dry-run: the quota refusal it passed, the first one

    def check(self, transferred: int) -> Refusal | None:
        if transferred <= self.granted:
            return None
        if self.failure:
            return self.failure
        refusal = rules.quota_exceeded(QuotaFigures(self.resource, self.owner, self.others, self.limit, transferred))
        if not self.quota.dry_run:
            return refusal
        # Dry-run: the upload goes on, its grant growing past the limit from now on.
        self.would_refuse = self.would_refuse or refusal
        self.limit, self.exhausted = UNLIMITED, False
        return None

    def wants_more(self, transferred: int) -> bool:
        """Half a step ahead of its end."""
        self.transferred = transferred
        if self.exhausted or self.extending:
            return False
        return self.granted - transferred < self.step // 2

    def must_wait(self, transferred: int) -> bool:
        """The next read could cross a grant that is still growing."""
        return self.extending and self.granted - transferred < HEADROOM

    def extend(self) -> Coroutine[None, None, None]:
        """Marks the hold as growing at once, whenever the returned coroutine runs."""
        self.extending = True
        return self._extend()

    async def _extend(self) -> None:
        """Asks until the ledger grants more or cuts it (or the lease is lost)."""
        pause = WAIT_FIRST_SECONDS
        try:
            while not await self._ask():
                await asyncio.sleep(pause)
                pause = min(pause * 2, WAIT_MAX_SECONDS)
        except Unavailable as e:
            self.failure = rules.unavailable(e.dependency, e.detail, e.reason)
        finally:
            self.extending = False

    async def _ask(self) -> bool:
        """One ask, reporting how far it streamed and whether it is blocked
        (must_wait paused its client); False when it is to ask again. With no
        limit (dry-run past it) it grows on its own, outside the schedule: the
        schedule hands out the limit's room, to the others too."""
        ledger = self.quota.ledger
        if self.limit == UNLIMITED:
            grant = await ledger.extend(self.entry, self.id, self.step, UNLIMITED)
            if grant is None:
                return self._lost()
            self.granted += grant.bytes
            return True
        blocked = self.granted - self.transferred < HEADROOM
        turn = await self.quota.ask(self.entry, lambda: ledger.want(
            self.entry, self.id, self.step, self.limit, self.transferred, blocked,
            self.quota.quota.wait_seconds, False))
        if turn is None:
            return self._lost()
        self.others = turn.others
        if turn.cut:
            return self._give_way() or await self._ask()
        if turn.granted > self.granted:
            self.granted = turn.granted
            return True
        return False

    def _lost(self) -> bool:
        self.exhausted = True
        self.failure = rules.unavailable("quota ledger", "the reservation's lease ran out")
        return True

    def _give_way(self) -> bool:
        """Chosen by the schedule to give way: it gets no more. Its client goes
        on to the grant's end (a body that ends within it is stored, the
        pause having come up to HEADROOM early) and is cut there (check); its
        bytes stay reserved until then. In dry-run it is let past, as any
        refusal: False, to ask again without the limit."""
        if not self.quota.dry_run:
            self.exhausted = True
            return True
        self.would_refuse = self.would_refuse or rules.quota_exceeded(
            QuotaFigures(self.resource, self.owner, self.others, self.limit, self.granted + 1))
        self.limit = UNLIMITED
        return False

    async def renew(self) -> bool:
        """False when the lease ran out, so the upload is no longer accounted for."""
        ledger = self.quota.ledger
        return (await ledger.renew(self.entry, self.id, self.transferred)
                and (not self.slot or await ledger.renew(self.slot, self.id)))

    async def settle(self, stored: bool, transferred: int | None = None) -> None:
        """Commit what Glance stored (the body's bytes, or all that was granted),
        release the rest, and the upload's slot."""
        ledger = self.quota.ledger
        if self.slot:
            await ledger.release(self.slot, self.id)
        if stored:
            if transferred is not None and transferred > self.granted:  # dry-run past the limit: all of it counts
                await ledger.extend(self.entry, self.id, transferred - self.granted, UNLIMITED)
            await ledger.commit(self.entry, self.id, self.granted if transferred is None else transferred)
        else:
            await ledger.release(self.entry, self.id)
