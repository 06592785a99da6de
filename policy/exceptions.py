"""Every exception of glance-gate's decisions, in one place (as
keystonemiddleware's auth_token keeps its own). A rule's refusal is not an
exception: it is a Refusal (policy/refusal.py)."""

from __future__ import annotations


class ConfigError(ValueError):
    """config.toml is refused at start; the message names the key."""


class InvalidToken(Exception):
    """The token is not valid (unknown, expired, revoked, malformed): 401."""


class Unavailable(Exception):
    """A dependency could not answer; the decision fails closed (503)."""

    reason = "upstream_unavailable"

    def __init__(self, dependency: str, detail: str):
        super().__init__(f"{dependency}: {detail}")
        self.dependency, self.detail = dependency, detail


class Misconfigured(Unavailable):
    """A dependency answers, but refuses the gateway's own identity (401, 403)
    or has no such URL (404): every decision fails closed (503) until an
    operator fixes what `fix` says."""

    reason = "misconfigured"

    def __init__(self, dependency: str, detail: str, fix: str):
        super().__init__(dependency, f"{detail}; {fix}")
        self.fix = fix


class Unseeded(Exception):
    """The quota ledger holds no usage for the project yet: read it from
    Glance, seed it (policy/quota/reservations.py HardQuota.ask)."""
