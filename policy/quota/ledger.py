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
that dies mid-upload cannot hold its bytes for ever.

Uploads of unknown size are scheduled here, so across gateways: each says how
far it has streamed and whether it is blocked (its client paused at the end
of its grant). Room is given to the blocked ones, the furthest first. When
every upload of the entry is blocked, none can end and hand room back: the
least advanced is cut at once (`Turn.cut`); its bytes stay reserved until its
gateway, having ended it, releases them. One that is blocked while the
entry has not moved for `wait_seconds` (a stalled client holds room) is cut
the same way, one at a time."""

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
class Turn:
    """An upload of unknown size's standing in the entry's schedule."""

    granted: int  # all its reservation holds now
    others: int  # the entry's usage and the other requests' reservations
    cut: bool  # chosen to give way: end the upload, then release


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
    async def reserve(self, project: str, hold: str, amount: int, limit: int, partial: bool) -> Grant:
        """A new reservation of `amount` bytes, or with `partial` as much of it
        as fits. Raises Unseeded when a limit applies and no usage is held."""

    @abstractmethod
    async def want(self, project: str, hold: str, amount: int, limit: int, streamed: int, blocked: bool,
                   wait_seconds: float, first: bool) -> Turn | None:
        """An upload of unknown size that has streamed `streamed` bytes asks for
        up to `amount` more (`first`: a new one, holding nothing yet). The room
        goes to the blocked first, the furthest first, then to the caller; then
        a victim is chosen if all are blocked, or the blocked waited
        `wait_seconds` for a move (module docstring). None if its lease ran out.
        Asked again while it gets nothing, since room is handed out between calls."""

    @abstractmethod
    async def extend(self, project: str, hold: str, amount: int, limit: int) -> Grant | None:
        """Up to `amount` more bytes for a reservation; None if its lease ran out."""

    @abstractmethod
    async def renew(self, project: str, hold: str, streamed: int = 0) -> bool:
        """A new lease for the reservation, which has streamed `streamed` bytes
        (for the schedule: an advance is a move); False if its lease ran out."""

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


STREAMING, BLOCKED, CUT = 0, 1, 2  # a hold's state in the schedule


@dataclass
class _Held:
    bytes: int
    lease_end: float
    streamed: int = 0
    state: int = STREAMING


def least_advanced(held: dict[str, _Held], names) -> str:
    """The victim: the one that streamed least (then holds least): cutting it wastes least."""
    return min(names, key=lambda h: (held[h].streamed, held[h].bytes, h))


@dataclass
class _Project:
    generation: int = 0
    stored: int | None = None  # usage; None until seeded
    held: dict[str, _Held] = field(default_factory=dict)
    committed: deque[tuple[int, int, float]] = field(default_factory=deque)  # generation, bytes, end; oldest first
    moved: float | None = None  # when a grant, a commit, a release, a cut or an advance last happened

    def expire(self, now: float) -> None:
        if any(h.lease_end <= now and h.bytes for h in self.held.values()):
            self.moved = now
        self.held = {n: h for n, h in self.held.items() if h.lease_end > now}
        while self.committed and self.committed[0][2] <= now:
            self.committed.popleft()

    def used(self, limit: int) -> int:
        if limit != UNLIMITED and self.stored is None:
            raise Unseeded
        return (self.stored or 0) + sum(h.bytes for h in self.held.values())

    def in_flight(self) -> int:
        """Holds, less those cut that hold nothing (kept only to tell their gateway)."""
        return sum(1 for h in self.held.values() if h.bytes or h.state != CUT)

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

    def hand_out(self, limit: int, amount: int, now: float) -> None:
        """The room, to the blocked, the furthest first."""
        room = available(self.used(limit), limit, amount * len(self.held))
        for name in sorted((n for n, h in self.held.items() if h.state == BLOCKED),
                           key=lambda n: (-self.held[n].streamed, -self.held[n].bytes, n)):
            if room <= 0:
                break
            held, granted = self.held[name], min(amount, room)
            held.bytes, held.state, room, self.moved = held.bytes + granted, STREAMING, room - granted, now

    def schedule(self, wait_seconds: float, now: float) -> None:
        """All blocked: the least advanced are cut until one holding bytes is
        (its release frees them). Blocked with no move for wait_seconds: one is."""
        while not any(h.state == CUT and h.bytes for h in self.held.values()):
            live = [n for n, h in self.held.items() if h.state != CUT]
            blocked = [n for n in live if self.held[n].state == BLOCKED]
            if not blocked:
                return
            deadlock = len(blocked) == len(live)
            if not deadlock and now - (self.moved if self.moved is not None else now) < wait_seconds:
                return
            self.held[least_advanced(self.held, blocked)].state, self.moved = CUT, now
            if not deadlock:
                return


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

    async def reserve(self, project, hold, amount, limit, partial) -> Grant:
        p = self._project(project)
        used, uploads = p.used(limit), p.in_flight()
        granted = grantable(amount, available(used, limit, amount), partial)
        if granted:
            p.held[hold] = _Held(granted, self._clock() + self.lease_seconds)
            p.moved = self._clock()
        return Grant(granted, used, uploads)

    async def want(self, project, hold, amount, limit, streamed, blocked, wait_seconds, first) -> Turn | None:
        p, now = self._project(project), self._clock()
        p.used(limit)  # Unseeded first, whatever else
        if hold not in p.held:
            if not first:
                return None
            p.held[hold] = _Held(0, now)
        mine = p.held[hold]
        if mine.state != CUT:
            if streamed > mine.streamed:
                mine.streamed, p.moved = streamed, now
            mine.state, mine.lease_end = BLOCKED if blocked else STREAMING, now + self.lease_seconds
            p.hand_out(limit, amount, now)
            if not blocked and (granted := min(amount, available(p.used(limit), limit, amount))):
                mine.bytes, p.moved = mine.bytes + granted, now
            if p.moved is None:
                p.moved = now
            p.schedule(wait_seconds, now)
        if mine.state == CUT and not mine.bytes:
            del p.held[hold]
        return Turn(mine.bytes, p.used(limit) - mine.bytes, mine.state == CUT)

    async def extend(self, project, hold, amount, limit) -> Grant | None:
        p = self._project(project)
        if hold not in p.held:
            return None
        used, mine = p.used(limit), p.held[hold]
        granted = grantable(amount, available(used, limit, amount), partial=True)
        mine.bytes, mine.state, mine.lease_end = mine.bytes + granted, STREAMING, self._clock() + self.lease_seconds
        if granted:
            p.moved = self._clock()
        return Grant(granted, used, p.in_flight() - 1)

    async def renew(self, project, hold, streamed=0) -> bool:
        p = self._project(project)
        if (mine := p.held.get(hold)) is None:
            return False
        if streamed > mine.streamed:
            mine.streamed, p.moved = streamed, self._clock()
        mine.lease_end = self._clock() + self.lease_seconds
        return True

    async def commit(self, project, hold, stored) -> None:
        p = self._project(project)
        if (mine := p.held.pop(hold, None)) is not None:
            p.log(min(mine.bytes, stored), self._clock() + self.keep_commits_seconds)
            p.moved = self._clock()

    async def release(self, project, hold) -> None:
        p = self._project(project)
        if p.held.pop(hold, None) is not None:
            p.moved = self._clock()

    async def adjust(self, project, delta) -> None:
        p = self._project(project)
        if delta > 0:
            p.log(delta, self._clock() + self.keep_commits_seconds)
        elif p.stored is not None:
            p.stored = max(0, p.stored + delta)

    async def read(self, project) -> Reading:
        p = self._project(project)
        return Reading(p.stored, sum(h.bytes for h in p.held.values()), p.in_flight())

    async def forget(self, project) -> None:
        if not self._project(project).held:
            self._projects.pop(project, None)
