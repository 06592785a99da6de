"""Single-flight (policy/singleflight.py): concurrent first uses of one key
share one call and its outcome, with plain coroutines (the herd against real
Keystone and Glance is tests/test_singleflight.py)."""

from __future__ import annotations

import asyncio

from policy.singleflight import SingleFlight


def test_single_flight_shares_one_call_and_its_outcome():
    calls = []

    async def call(outcome):
        calls.append(outcome)
        await asyncio.sleep(0.01)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def herd():
        flights = SingleFlight()
        first = asyncio.ensure_future(flights.run("k", lambda: call("first")))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(flights.run("k", lambda: call("other"))) for _ in range(5)]
        await asyncio.sleep(0)
        first.cancel()  # the first caller leaves: the others still get the answer
        values = await asyncio.gather(*rest)
        failing = [flights.run("e", lambda: call(ValueError("no"))) for _ in range(3)]
        errors = await asyncio.gather(*failing, return_exceptions=True)
        return values, errors, flights.pending("k")

    values, errors, pending = asyncio.run(herd())
    assert values == ["first"] * 5 and not pending
    assert [type(e) for e in errors] == [ValueError] * 3
    assert len(calls) == 2  # one per key
