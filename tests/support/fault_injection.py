"""A mitmproxy script for tests only, loaded before addons/script.py: the
step of the decision named by $GLANCE_GATE_FAULT raises an exception no rule
expects, as a bug, or a dependency's answer missing a key, would."""

from __future__ import annotations

import os

from policy.glance import GlanceClient
from policy.identity import KeystoneClient
from policy.quota.ledger import MemoryLedger
from policy.quota.limits import Limits
from policy.quota.reservations import Hold


class InjectedFault(Exception):
    pass


def raising(step: str):
    async def fail(*args, **kwargs):
        raise InjectedFault(f"injected fault in {step}")
    return fail


def raising_after_first_chunk(check):
    def checked(self, transferred: int):
        if getattr(self, "checked", False):  # the first chunk passes
            raise InjectedFault("injected fault in stream")
        self.checked = True
        return check(self, transferred)
    return checked


def extend_raising(self):
    self.extending = True
    return raising("extend")()


FAULTS = {
    "token": lambda: setattr(KeystoneClient, "validate", raising("token")),
    "image": lambda: setattr(GlanceClient, "image", raising("image")),
    "limits": lambda: setattr(Limits, "limit_for", raising("limits")),
    "usage": lambda: setattr(GlanceClient, "usage", raising("usage")),
    "reserve": lambda: setattr(MemoryLedger, "reserve", raising("reserve")),
    "stream": lambda: setattr(Hold, "check", raising_after_first_chunk(Hold.check)),
    "extend": lambda: setattr(Hold, "extend", extend_raising),
}

FAULTS[os.environ["GLANCE_GATE_FAULT"]]()
