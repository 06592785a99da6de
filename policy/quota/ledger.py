"""The quota ledger: per project, the bytes reserved by uploads in flight and
the bytes committed recently, i.e. stored at Glance but perhaps not yet in a
usage reading. Every operation is atomic; the in-memory ledger is the default
for one gateway, policy.quota.redis_ledger the one replicas share.

Reservations carry a lease: one not renewed in time is dropped, so a gateway
that dies mid-upload cannot hold its bytes for ever. A commit is counted on
top of any usage reading that began before it (readings carry the ledger's
generation, the number of commits so far), and dropped once no cached reading
can be that old."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field

from policy.config import UNLIMITED


@dataclass(frozen=True)
class Usage:
    bytes: int  # stored, as Glance counted it
    generation: int  # the ledger's generation when the reading began


@dataclass(frozen=True)
class Grant:
    bytes: int  # granted by this call; 0 when nothing was
    used: int  # the project's bytes counted before it: usage, reservations, recent commits
    uploads: int  # the project's reservations before it


class Ledger(ABC):
    def __init__(self, lease_seconds: float, keep_commits_seconds: float):
        self.lease_seconds, self.keep_commits_seconds = lease_seconds, keep_commits_seconds

    async def ping(self) -> bool:
        """Whether the ledger can answer (for the dependency probe)."""
        return True

    @abstractmethod
    async def generation(self, project: str) -> int:
        """Read before fetching usage from Glance."""

    @abstractmethod
    async def reserve(self, project: str, hold: str, amount: int, usage: Usage, limit: int,
                      max_uploads: int, partial: bool) -> Grant:
        """A new reservation of `amount` bytes, or with `partial` as much of
        it as fits. Grants nothing when the project has max_uploads in flight."""

    @abstractmethod
    async def extend(self, project: str, hold: str, amount: int, usage: Usage, limit: int) -> Grant | None:
        """Up to `amount` more bytes for a reservation; None if its lease ran out."""

    @abstractmethod
    async def renew(self, project: str, hold: str) -> bool:
        """A new lease for the reservation; False if its lease ran out."""

    @abstractmethod
    async def commit(self, project: str, hold: str) -> None:
        """The reserved bytes are stored at Glance now."""

    @abstractmethod
    async def release(self, project: str, hold: str) -> None:
        """The reserved bytes were not stored."""

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
    held: dict[str, tuple[int, float]] = field(default_factory=dict)  # hold -> bytes, lease end
    committed: deque[tuple[int, int, float]] = field(default_factory=deque)  # generation, bytes, end; oldest first

    def expire(self, now: float) -> None:
        self.held = {h: v for h, v in self.held.items() if v[1] > now}
        while self.committed and self.committed[0][2] <= now:
            self.committed.popleft()

    def used(self, usage: Usage) -> int:
        recent = 0
        for generation, size, _ in reversed(self.committed):  # only the commits since the reading
            if generation <= usage.generation:
                break
            recent += size
        return usage.bytes + sum(b for b, _ in self.held.values()) + recent


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

    async def reserve(self, project, hold, amount, usage, limit, max_uploads, partial) -> Grant:
        p = self._project(project)
        used, uploads = p.used(usage), len(p.held)
        if max_uploads != UNLIMITED and uploads >= max_uploads:
            return Grant(0, used, uploads)
        granted = grantable(amount, available(used, limit, amount), partial)
        if granted:
            p.held[hold] = (granted, self._clock() + self.lease_seconds)
        return Grant(granted, used, uploads)

    async def extend(self, project, hold, amount, usage, limit) -> Grant | None:
        p = self._project(project)
        if hold not in p.held:
            return None
        used = p.used(usage)
        granted = grantable(amount, available(used, limit, amount), partial=True)
        p.held[hold] = (p.held[hold][0] + granted, self._clock() + self.lease_seconds)
        return Grant(granted, used, len(p.held) - 1)

    async def renew(self, project, hold) -> bool:
        p = self._project(project)
        if hold not in p.held:
            return False
        p.held[hold] = (p.held[hold][0], self._clock() + self.lease_seconds)
        return True

    async def commit(self, project, hold) -> None:
        p = self._project(project)
        if (entry := p.held.pop(hold, None)) is not None:
            p.generation += 1
            p.committed.append((p.generation, entry[0], self._clock() + self.keep_commits_seconds))

    async def release(self, project, hold) -> None:
        self._project(project).held.pop(hold, None)
