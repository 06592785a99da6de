"""`glance-gate usage [PROJECT…]` and `glance-gate reconcile PROJECT`: what
the ledger the gateways share holds for a project, and a re-listing of it now."""

from __future__ import annotations

from collections.abc import Callable

from policy import decision as rules
from policy.config import UNLIMITED, Config
from policy.quota import services
from policy.quota.reservations import HardQuota, key, split_key

RESOURCES = (rules.BYTES_STORED, rules.BYTES_STAGED, rules.IMAGES, rules.UPLOADS)
LISTED = RESOURCES[:3]  # the uploads in flight are reservations only


def _shown(n: int | None) -> str:
    """Exact figures (bytes for the sizes), one word each: for people and scripts alike."""
    return "-" if n is None else "unlimited" if n == UNLIMITED else str(n)


async def _usage(quota: HardQuota, projects: list[str], out: Callable[[str], None]) -> None:
    projects = projects or sorted({split_key(entry)[0] for entry in await quota.ledger.entries()})
    out(f"{'project':34} {'resource':22} {'usage':>16} {'reserved':>16} {'in_flight':>9} {'limit':>16}")
    for project in projects:
        for resource in RESOURCES:
            reading = await quota.ledger.read(key(project, resource))
            usage = reading.usage if resource != rules.UPLOADS else reading.holds
            limit = await quota.limits.limit_for(project, resource)
            out(f"{project:34} {resource:22} {_shown(usage):>16} "
                f"{_shown(reading.reserved if resource != rules.UPLOADS else None):>16} "
                f"{reading.holds:>9} {_shown(limit):>16}")


async def _reconcile(quota: HardQuota, project: str, out: Callable[[str], None]) -> None:
    for resource in LISTED:
        correction = await quota.reconcile(key(project, resource), None)
        out(f"{project} {resource}: " + ("not held: the next decision lists it" if correction is None
                                           else f"corrected by {correction:+d}"))


async def run(config: Config, command: str, projects: list[str], out: Callable[[str], None]) -> int:
    """The command's exit status; usage `-` when the ledger holds none (not seeded)."""
    if config.quota.ledger != "redis":
        out(f'glance-gate {command}: needs quota.ledger = "redis": the memory ledger is each gateway '
            "process's own, out of this command's reach")
        return 2
    _, _, quota = services(config)
    try:
        if command == "usage":
            await _usage(quota, projects, out)
        else:
            await _reconcile(quota, projects[0], out)
    finally:
        await quota.ledger.close()
    return 0
