"""The quota rule where it lives (policy/quota/reservations.py over a ledger),
offline: what HardQuota.reserve grants or refuses, on the memory ledger and on
ledger.lua in a real redis-server; and where a decision's usage comes from: a
Glance that answers listings slowly over httpx's mock transport, counting how
many run at once."""

from __future__ import annotations

import asyncio

import uuid

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.config import UNLIMITED, Quota
from policy.decision import BYTES_STORED
from policy.refusal import QuotaFigures
from policy.glance import GlanceClient, TokenCredentials
from policy.quota.ledger import MemoryLedger
from policy.quota.limits import Limits
from policy.quota.reservations import Change, HardQuota
from tests.support.fakes import Glance


class SlowGlance:
    """Lists `stored` bytes for every project, and `hidden` in a hidden image,
    each listing taking a while."""

    def __init__(self, stored: int = 0, hidden: int = 0):
        self.stored, self.hidden, self.running, self.most, self.listed = stored, hidden, 0, 0, []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v2/images"
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.05)
        self.running -= 1
        if request.url.params["os_hidden"] == "true":  # Glance lists hidden images only when asked
            return httpx.Response(200, json={"images": [
                {"status": "deactivated", "size": self.hidden, "owner": request.url.params["owner"]}]})
        self.listed.append(request.url.params["owner"])
        return httpx.Response(200, json={"images": [
            {"status": "active", "size": self.stored, "owner": request.url.params["owner"]}]})


class ServiceLogin:
    """The gateway's service identity, with the admin role Glance's listing needs."""

    service_roles = frozenset({"admin"})

    async def service_token(self) -> str:
        return "service-token"


def quota(glance: SlowGlance, limit: int = 100, max_listings: int = 2) -> HardQuota:
    conf = Quota(default_bytes=limit, max_listings=max_listings)
    client = GlanceClient("http://glance", TokenCredentials(ServiceLogin(), frozenset({"admin"})), 5,
                          client=httpx.AsyncClient(transport=httpx.MockTransport(glance)))
    return HardQuota(conf, Limits(conf), client, MemoryLedger(30, 600))


def test_a_burst_of_cold_projects_runs_at_most_max_listings_at_once():
    glance = SlowGlance()

    async def go():
        q = quota(glance, max_listings=2)
        results = await asyncio.gather(*(q.reserve(f"p{i}", 10) for i in range(12)))
        return [hold for hold, refusal in results if hold and not refusal]
    assert len(asyncio.run(go())) == 12
    assert glance.most == 2
    assert sorted(glance.listed) == sorted(f"p{i}" for i in range(12))


def test_concurrent_cold_decisions_of_one_project_share_one_listing_then_none():
    glance = SlowGlance(stored=60)

    async def go():
        q = quota(glance, limit=100)
        first = await asyncio.gather(*(q.reserve("p", 10) for _ in range(6)))
        later = await q.reserve("p", 10)
        return first, later
    first, (later, refusal) = asyncio.run(go())
    assert glance.listed == ["p"]
    # 60 stored: four reservations of 10 fit, then the limit
    assert sum(hold is not None for hold, _ in first) == 4
    assert later is None and refusal.status == 413


def test_hidden_images_count():
    """Glance's image_size_total counts hidden images, which its list shows only when asked for them."""
    glance = SlowGlance(stored=60, hidden=30)

    async def go():
        return await quota(glance, limit=100).reserve("p", 11)
    hold, refusal = asyncio.run(go())
    assert hold is None and refusal.status == 413


def test_a_location_add_is_refused_under_a_limit_or_counted_once_glances_task_lets_go():
    """Glance answers a location add 202 and adds it in a task that holds the
    image's os_glance_import_task lock: the gateway counts it once the lock is gone."""
    added = {"owner": "p", "status": "active", "size": 50, "stores": "web"}
    images = iter([{"owner": "p", "status": "queued", "size": None}]
                  + [{**added, "status": "importing", "stores": "", "os_glance_import_task": "t"}] * 3)

    async def glance(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/images":
            return httpx.Response(200, json={"images": []})
        return httpx.Response(200, json=next(images, added))

    async def go():
        conf = Quota(default_bytes=100, location_add="allow")
        client = GlanceClient("http://glance", TokenCredentials(ServiceLogin(), frozenset({"admin"})), 5,
                              client=httpx.AsyncClient(transport=httpx.MockTransport(glance)))
        q = HardQuota(conf, Limits(conf), client, MemoryLedger(30, 600))
        refused = await HardQuota(Quota(default_bytes=100), Limits(conf), client, q.ledger).location_add(
            Change("i", ("p", 0)))
        change = await q.changing("i")
        assert await q.location_add(change) is None
        await q.reserve("p", 10)  # seeds p: nothing stored yet
        await q.follow(change, poll_seconds=0)
        return refused, await q.reserve("p", 51)
    refused, (hold, refusal) = asyncio.run(go())
    assert (refused.status, refused.reason) == (413, "quota")
    assert hold is None and refusal.status == 413  # 50 counted, 10 reserved: 51 more does not fit


def refusal(new_ledger, stored: int, limit: int, size: int):
    """HardQuota's answer to an upload of `size` bytes into a project a listing
    finds storing `stored`, under `limit` (-1: none), on a new ledger."""
    async def go():
        conf = Quota(default_bytes=limit)
        quota = HardQuota(conf, Limits(conf), Glance(None, stored), new_ledger())
        try:
            owner = f"p-{uuid.uuid4()}"
            hold, refused = await quota.reserve(owner, size)
            assert hold is None or refused is None
            return refused and (refused.status, refused.reason, refused.figures, owner)
        finally:
            await quota.ledger.close()
    return asyncio.run(go())


@pytest.mark.parametrize("size, stored, limit, refused", [
    (10, 90, 100, False),  # exactly full is allowed
    (11, 90, 100, True),
    (1, 100, 100, True),
    (10**15, 10**15, UNLIMITED, False),
    (1, 0, 0, True),  # a limit of 0 refuses any data
])
def test_an_upload_is_refused_exactly_when_it_would_pass_the_limit(new_ledger, size, stored, limit, refused):
    answer = refusal(new_ledger, stored, limit, size)
    assert bool(answer) == refused
    if refused:
        status, reason, figures, owner = answer
        assert (status, reason) == (413, "quota")
        assert figures == QuotaFigures(BYTES_STORED, owner, stored, limit, size)


SIZES = st.integers(0, 2**50)  # a PiB: sums stay exact in Lua's doubles (2**53)


@settings(deadline=None)  # a real redis-server answers: under load, slower than the default 200 ms
@given(size=st.integers(1, 2**50), more=SIZES, stored=SIZES, limit=SIZES)
def test_quota_is_monotone_in_size(new_ledger, size, more, stored, limit):
    """A larger upload never passes where a smaller one was refused; none is
    refused without a limit; a project may fill its limit exactly."""
    if refusal(new_ledger, stored, limit, size):
        assert refusal(new_ledger, stored, limit, size + more), "a larger upload passed where a smaller was refused"
    assert refusal(new_ledger, stored, UNLIMITED, size + more) is None
    if stored < limit:
        assert refusal(new_ledger, stored, limit, limit - stored) is None  # exactly full is allowed


def test_in_dry_run_an_upload_past_the_limit_gives_no_one_else_room_over_it(new_ledger):
    """Two uploads of unknown size into 10 MiB, in dry-run: b holds 6 MiB and
    waits at its end, a holds 4 MiB and is chosen to give way, so it goes on past
    the limit. a's grants past it are its own: b gets none of that room, and is
    flagged too once it has waited `wait_seconds`, never let over the limit unflagged."""
    MiB = 1024 * 1024

    async def go():
        conf = Quota(default_bytes=10 * MiB, chunk_bytes=6 * MiB, wait_seconds=0.5, enforce="dry-run")
        q = HardQuota(conf, Limits(conf), Glance(None, 0), new_ledger())
        try:
            (b, _), (a, _) = await q.reserve("p", None), await q.reserve("p", None)
            assert (b.granted, a.granted) == (6 * MiB, 4 * MiB)
            assert b.wants_more(6 * MiB - 1)
            waiting = asyncio.create_task(b.extend())
            await asyncio.sleep(0.1)
            for _ in range(2):  # a gives way (all are blocked), then goes on past the limit
                assert a.wants_more(a.granted - 1)
                await a.extend()
            await waiting
            return a, b
        finally:
            await q.ledger.close()
    a, b = asyncio.run(go())
    assert a.would_refuse and a.granted > 10 * MiB
    assert b.would_refuse, f"b was let over the limit unflagged: granted {b.granted}"
