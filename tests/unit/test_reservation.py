"""An allowed upload's reservation (addons/reservation.py), on a hold with
fixed answers: settled once as Glance's answer says, told to its observer,
grown ahead of the body, the client paused at the grant, renewed or cut."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from addons import wire
from addons.exchange import Exchange
from addons.reservation import Reservation
from policy.refusal import request_id
from policy.exceptions import Unavailable
from policy.routes import Route
from tests.support.addon_flows import IMAGE_ID, run, upload, upload_headers


class FakeHold:
    """The ledger's side of a reservation, as policy.quota.reservations.Hold offers it."""

    def __init__(self, lease_seconds: float = 30, renewed: bool | Exception = True,
                 settle: Exception | None = None, extend: Exception | None = None, grant: int = 100):
        self.quota = SimpleNamespace(ledger=SimpleNamespace(lease_seconds=lease_seconds))
        self.renewed, self.settle_error, self.extend_error, self.grant = renewed, settle, extend, grant
        self.settled: list[tuple[bool, int | None]] = []
        self.extended = 0

    def wants_more(self, transferred: int) -> bool:
        return transferred > self.grant // 2

    def must_wait(self, transferred: int) -> bool:
        return transferred >= self.grant

    async def extend(self) -> None:
        self.extended += 1
        if self.extend_error:
            raise self.extend_error
        self.grant *= 2

    async def renew(self) -> bool:
        if isinstance(self.renewed, Exception):
            raise self.renewed
        return self.renewed

    async def settle(self, stored: bool, transferred: int | None) -> None:
        if self.settle_error:
            raise self.settle_error
        self.settled.append((stored, transferred))


class Recorder:
    def __init__(self, hold: FakeHold, route: str = "upload"):
        self.flow = upload(upload_headers())
        self.exchange = Exchange(Route(route, IMAGE_ID), "PUT", "127.0.0.1", request_id())
        self.cuts, self.failures, self.outcomes, self.hold = [], [], [], hold

    def reservation(self) -> Reservation:
        return Reservation(self.flow, self.exchange, self.hold, self.cut, self.failures.append,
                           self.outcomes.append)

    def cut(self, refusal) -> None:  # as the ending service does: the request is finished
        self.cuts.append(refusal)
        self.exchange.refuse(refusal)


@pytest.fixture
def paused(monkeypatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(wire, "hold_client", lambda flow: calls.append("hold"))
    monkeypatch.setattr(wire, "release_client", lambda flow: calls.append("release"))
    return calls


@pytest.mark.parametrize("complete, status, stored", [
    (True, 204, True),  # Glance stored it
    (True, None, True),  # the whole body reached Glance, its answer was lost: the safe side
    (True, 413, False),
    (False, None, False),  # cut, or the client left
])
def test_settled_once_as_glances_answer_says_and_told_to_its_observer(complete, status, stored):
    rec = Recorder(FakeHold())

    async def finish():
        reservation = rec.reservation()
        rec.exchange.transferred, rec.exchange.body_complete = 1024, complete
        if status:
            rec.exchange.answer(status, None)
        reservation.settle()
        await asyncio.sleep(0.01)
    run(finish)
    assert rec.hold.settled == [(stored, 1024)]
    assert rec.outcomes == ["committed" if stored else "released"]


def test_an_import_commits_what_it_was_granted_not_its_small_body():
    rec = Recorder(FakeHold(), route="import")

    async def finish():
        reservation = rec.reservation()
        rec.exchange.transferred, rec.exchange.body_complete = 50, True
        rec.exchange.answer(202, None)
        reservation.settle()
        await asyncio.sleep(0.01)
    run(finish)
    assert rec.hold.settled == [(True, None)]


def test_a_ledger_down_at_settling_leaves_it_to_the_lease():
    rec = Recorder(FakeHold(settle=Unavailable("quota ledger", "down")))

    async def finish():
        rec.reservation().settle()
        await asyncio.sleep(0.01)
    run(finish)
    assert rec.outcomes == ["error"] and rec.failures == []


def test_the_grant_grows_ahead_of_the_body_and_the_client_waits_at_its_end(paused):
    rec = Recorder(FakeHold(grant=100))

    async def stream():
        reservation = rec.reservation()
        reservation.streamed(40)
        assert rec.hold.extended == 0 and paused == []
        reservation.streamed(100)  # past half: asks for more; at the grant: paused until it comes
        await asyncio.sleep(0.01)
        reservation.settle()
    run(stream)
    assert rec.hold.extended == 1
    assert paused == ["hold", "release"]


def test_an_extension_that_fails_ends_the_upload_with_the_client_still_paused(paused):
    rec = Recorder(FakeHold(grant=100, extend=KeyError("x")))

    async def stream():
        reservation = rec.reservation()
        try:
            reservation.streamed(100)
            await asyncio.sleep(0.01)
        finally:
            reservation.settle()
    run(stream)
    assert rec.failures == ["Reservation.extend"]
    assert paused == ["hold"], "never released: no byte past the grant"


def test_a_lease_that_cannot_be_renewed_cuts_the_upload_with_503():
    rec = Recorder(FakeHold(lease_seconds=0.03, renewed=False))

    async def stream():
        reservation = rec.reservation()
        await asyncio.sleep(0.05)
        reservation.settle()
    run(stream)
    [cut] = rec.cuts
    assert (cut.status, cut.reason) == (503, "upstream_unavailable") and "lease ran out" in cut.message


def test_a_ledger_down_at_renewal_keeps_the_upload_going():
    rec = Recorder(FakeHold(lease_seconds=0.03, renewed=Unavailable("quota ledger", "down")))

    async def stream():
        reservation = rec.reservation()
        await asyncio.sleep(0.05)
        reservation.settle()
    run(stream)
    assert rec.cuts == [] and rec.failures == []
