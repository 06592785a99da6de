"""The quota ledger: per project, the bytes stored at Glance (its *usage*),
the bytes reserved by uploads in flight, and a log of recent commits. Every
operation is atomic; the in-memory ledger is the default for one gateway,
policy.quota.redis_ledger the one replicas share.

Usage is seeded by one listing of the project's images the first time a
decision needs it, then kept by what passes through the gateway: a commit
moves a reservation's bytes into it, a change (a delete, a copy removed or
added, an owner changed) adjusts it. A periodic reconciliation replaces it
with a new listing. A listing takes time, and commits land meanwhile: a
reading carries the ledger's generation (its count of commits) from before
the listing began, and every commit logged since is added on top of it, so a
listing that misses a fresh commit never lowers usage below what is stored.
Decreases are not replayed: a listing that still shows a deleted image only
overcounts, until the next reconciliation.

Reservations carry a lease: one not renewed in time is dropped, so a gateway
that dies mid-upload cannot hold its bytes for ever."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field

from policy.config import UNLIMITED
from policy.exceptions import Unseeded

# A project nobody has touched for this long is forgotten: the next decision
# costs one listing again.
IDLE_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Usage:
    bytes: int  # stored, as a listing of Glance counted it
    generation: int  # the ledger's generation when the listing began


@dataclass(frozen=True)
class Grant:
    bytes: int  # granted by this call; 0 when nothing was
    used: int  # the project's bytes counted before it: usage and reservations
    uploads: int  # the project's reservations before it


@dataclass(frozen=True)
class Reading:
    """What the ledger holds for an entry, for an operator."""

    usage: int | None  # None: not seeded
    reserved: int  # held by requests in flight
    holds: int  # requests in flight


class Ledger(ABC):
    def __init__(self, lease_seconds: float, keep_commits_seconds: float):
        self.lease_seconds, self.keep_commits_seconds = lease_seconds, keep_commits_seconds

    async def ping(self) -> bool:
        """Whether the ledger can answer (for the dependency probe)."""
        return True

    @abstractmethod
    async def generation(self, project: str) -> int:
        """Read before listing the project's images at Glance."""

    @abstractmethod
    async def seed(self, project: str, usage: Usage, overwrite: bool) -> int | None:
        """Usage from a listing, plus the commits logged since it began. Only
        where none is held yet, unless `overwrite` (a reconciliation). Returns
        the correction made (bytes, new minus old), None when nothing was held."""

    @abstractmethod
    async def reserve(self, project: str, hold: str, amount: int, limit: int,
                      max_uploads: int, partial: bool) -> Grant:
        """A new reservation of `amount` bytes, or with `partial` as much of it
        as fits. Grants nothing when the project has max_uploads in flight.
        Raises Unseeded when a limit applies and no usage is held."""

    @abstractmethod
    async def extend(self, project: str, hold: str, amount: int, limit: int) -> Grant | None:
        """Up to `amount` more bytes for a reservation; None if its lease ran out."""

    @abstractmethod
    async def renew(self, project: str, hold: str) -> bool:
        """A new lease for the reservation; False if its lease ran out."""

    @abstractmethod
    async def commit(self, project: str, hold: str, stored: int) -> None:
        """Glance stores `stored` bytes of the reservation now (at most what it
        holds; a body of unknown size was granted in steps, ahead of its end)."""

    @abstractmethod
    async def release(self, project: str, hold: str) -> None:
        """The reserved bytes were not stored."""

    @abstractmethod
    async def adjust(self, project: str, delta: int) -> None:
        """Glance stores `delta` bytes more (or fewer) for the project, outside
        any reservation. An increase is logged like a commit."""

    @abstractmethod
    async def read(self, project: str) -> Reading:
        """Usage and reservations now, changing nothing."""

    async def entries(self) -> list[str]:
        """Every entry the ledger holds usage for."""
        return []

    async def claim(self, project: str, seconds: float) -> bool:
        """The right to reconcile the project for `seconds`: one gateway at a time."""
        return True

    async def forget(self, project: str) -> None:
        """Drop an idle project's usage."""

    async def close(self) -> None:
        pass


def available(used: int, limit: int, amount: int) -> int:
    return amount if limit == UNLIMITED else max(0, limit - used)


def grantable(amount: int, room: int, partial: bool) -> int:
    if partial:
        return min(amount, room)
    return amount if amount <= room else 0


@dataclass
class _Project:
    generation: int = 0
    stored: int | None = None  # usage; None until seeded
    held: dict[str, tuple[int, float]] = field(default_factory=dict)  # hold -> bytes, lease end
    committed: deque[tuple[int, int, float]] = field(default_factory=deque)  # generation, bytes, end; oldest first

    def expire(self, now: float) -> None:
        self.held = {h: v for h, v in self.held.items() if v[1] > now}
        while self.committed and self.committed[0][2] <= now:
            self.committed.popleft()

    def used(self, limit: int) -> int:
        if limit != UNLIMITED and self.stored is None:
            raise Unseeded
        return (self.stored or 0) + sum(b for b, _ in self.held.values())

    def since(self, generation: int) -> int:
        """Bytes committed after a reading of that generation: only those are read."""
        recent = 0
        for g, size, _ in reversed(self.committed):
            if g <= generation:
                break
            recent += size
        return recent

    def log(self, size: int, end: float) -> None:
        self.generation += 1
        self.committed.append((self.generation, size, end))
        if self.stored is not None:
            self.stored += size


class MemoryLedger(Ledger):
    """One gateway's ledger. Atomic because nothing in it awaits."""

    def __init__(self, lease_seconds: float, keep_commits_seconds: float, clock=time.monotonic):
        super().__init__(lease_seconds, keep_commits_seconds)
        self._clock = clock
        self._projects: dict[str, _Project] = {}

    def _project(self, project: str) -> _Project:
        p = self._projects.setdefault(project, _Project())
        p.expire(self._clock())
        return p

    async def generation(self, project: str) -> int:
        return self._project(project).generation

    async def seed(self, project, usage, overwrite) -> int | None:
        p = self._project(project)
        if p.stored is not None and not overwrite:
            return 0
        old, p.stored = p.stored, usage.bytes + p.since(usage.generation)
        return None if old is None else p.stored - old

    async def reserve(self, project, hold, amount, limit, max_uploads, partial) -> Grant:
        p = self._project(project)
        used, uploads = p.used(limit), len(p.held)
        if max_uploads != UNLIMITED and uploads >= max_uploads:
            return Grant(0, used, uploads)
        granted = grantable(amount, available(used, limit, amount), partial)
        if granted:
            p.held[hold] = (granted, self._clock() + self.lease_seconds)
        return Grant(granted, used, uploads)

    async def extend(self, project, hold, amount, limit) -> Grant | None:
        p = self._project(project)
        if hold not in p.held:
            return None
        used = p.used(limit)
        granted = grantable(amount, available(used, limit, amount), partial=True)
        p.held[hold] = (p.held[hold][0] + granted, self._clock() + self.lease_seconds)
        return Grant(granted, used, len(p.held) - 1)

    async def renew(self, project, hold) -> bool:
        p = self._project(project)
        if hold not in p.held:
            return False
        p.held[hold] = (p.held[hold][0], self._clock() + self.lease_seconds)
        return True

    async def commit(self, project, hold, stored) -> None:
        p = self._project(project)
        if (entry := p.held.pop(hold, None)) is not None:
            p.log(min(entry[0], stored), self._clock() + self.keep_commits_seconds)

    async def release(self, project, hold) -> None:
        self._project(project).held.pop(hold, None)

    async def adjust(self, project, delta) -> None:
        p = self._project(project)
        if delta > 0:
            p.log(delta, self._clock() + self.keep_commits_seconds)
        elif p.stored is not None:
            p.stored = max(0, p.stored + delta)

    async def read(self, project) -> Reading:
        p = self._project(project)
        return Reading(p.stored, sum(b for b, _ in p.held.values()), len(p.held))

    async def forget(self, project) -> None:
        if not self._project(project).held:
            self._projects.pop(project, None)
