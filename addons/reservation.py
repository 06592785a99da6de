"""An allowed upload's quota reservation, kept while the body streams: the
lease renewed, the grant grown ahead of a body of unknown size, and settled
once when the request finishes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mitmproxy import http

from addons import wire
from addons.exchange import Exchange
from policy import decision as rules
from policy.exceptions import Unavailable
from policy.quota.reservations import Hold
from policy.refusal import Refusal

log = logging.getLogger("glance_gate.quota")


class Reservation:
    def __init__(self, flow: http.HTTPFlow, exchange: Exchange, hold: Hold,
                 cut: Callable[[Refusal], None], failed: Callable[[str], None], settled: Callable[[str], None]):
        """cut: ends the upload with a refusal; failed: with 503 `internal`, from an except block;
        settled: told how the reservation ended ("committed", "released" or "error")."""
        self.flow, self.exchange, self.hold, self.cut, self.failed = flow, exchange, hold, cut, failed
        self.settled = settled
        self._tasks: set[asyncio.Task] = set()
        self._renewing = self._spawn(self._renew())

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def streamed(self, transferred: int) -> None:
        """After each chunk: ask for more before the grant runs out, and pause
        the client when the next read could outrun the answer."""
        if self.hold.wants_more(transferred):
            self._spawn(self._extend(self.hold.extend()))
        if self.hold.must_wait(transferred):
            wire.hold_client(self.flow)

    async def _extend(self, extension) -> None:
        try:
            await extension
        except Exception:  # the client stays paused: no byte past the grant
            self.failed("Reservation.extend")
            return
        if not self.exchange.finished:
            wire.release_client(self.flow)

    async def _renew(self) -> None:
        while not self.exchange.finished:
            await asyncio.sleep(self.hold.quota.ledger.lease_seconds / 3)
            try:
                if not await self.hold.renew() and not self.exchange.finished:
                    # Past its lease the upload is no longer counted: fail closed.
                    self.cut(rules.unavailable("quota ledger", "the reservation's lease ran out"))
            except Unavailable as e:
                log.warning("cannot renew the reservation of %s: %s", self.exchange.request_id, e)
            except Exception:
                if not self.exchange.finished:
                    self.failed("Reservation.renew")
                return

    def settle(self) -> None:
        """Glance stored the data (or staged it, or created the image) if it said
        so, or if the whole body reached it and its answer was lost: then commit
        (the safe side), else release."""
        self._renewing.cancel()
        ex = self.exchange
        stored = ex.body_complete and (ex.upstream_status is None or ex.upstream_status < 300)
        # An upload stores its body; an import, all it was granted (its small body is no image data).
        self._spawn(self._settle(stored, ex.transferred if ex.route.is_upload else None))

    async def _settle(self, stored: bool, transferred: int | None) -> None:
        try:
            await self.hold.settle(stored, transferred)
        except Unavailable as e:  # the lease will drop it
            log.warning("cannot settle the reservation of %s: %s", self.exchange.request_id, e)
            self.settled("error")
            return
        self.settled("committed" if stored else "released")
