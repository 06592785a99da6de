"""One request's story, from its headers to its final status: what metrics,
the audit trail and the quota ledger read when it finishes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from policy.decision import upstream_reason
from policy.gate import Verdict
from policy.refusal import QuotaFigures, Refusal
from policy.routes import Route

if TYPE_CHECKING:
    from policy.quota.reservations import Change

GATEWAY = "gateway"
UPSTREAM = "upstream"
CLIENT_CLOSED = 499  # nginx's code for a client that left before the answer


@dataclass
class Exchange:
    route: Route
    method: str
    client: str
    request_id: str
    started: float = field(default_factory=time.monotonic)
    wall_start: float = field(default_factory=time.time)
    declared: int | None = None  # body bytes announced by Content-Length
    transferred: int = 0  # body bytes forwarded upstream
    body_complete: bool = False  # the whole body went upstream
    decision_seconds: float | None = None  # uploads only
    forwarded_at: float | None = None  # when forwarding to Glance began
    verdict: Verdict | None = None  # uploads only
    settle: Callable[[], None] | None = None  # the quota reservation's, called when the request finishes
    change: Change | None = None  # what the image stored before a change, for the quota's usage
    status: int | None = None
    reason: str = ""
    source: str = ""
    upstream_status: int | None = None
    ended: float | None = None
    detail: str = ""  # why a request failed without a decision: mitmproxy's error message
    figures: QuotaFigures | None = None  # a quota refusal's numbers
    buffered: bool = False  # a small JSON body decided on whole: an import, or a create under an image quota

    would_refuse: Refusal | None = None  # dry-run: a change's quota refusal passed (a location add)

    @property
    def quota_would_refuse(self) -> Refusal | None:
        """Dry-run: the quota refusal the request passed."""
        return self.verdict.quota_would_refuse() if self.verdict else self.would_refuse

    @property
    def duration(self) -> float:
        assert self.ended is not None
        return self.ended - self.started

    @property
    def streaming_upload(self) -> bool:
        return self.route.is_upload and self.forwarded_at is not None

    def forward(self) -> None:
        self.forwarded_at = time.monotonic()

    @property
    def finished(self) -> bool:
        return self.status is not None

    def refuse(self, refusal: Refusal) -> None:
        self.figures = refusal.figures
        self._finish(refusal.status, refusal.reason, GATEWAY)

    def answer(self, status: int, upstream_request_id: str | None) -> None:
        """Glance's answer reached the client."""
        self.upstream_status = status
        self.request_id = upstream_request_id or self.request_id  # to match Glance's logs
        self._finish(status, upstream_reason(status), UPSTREAM)

    def fail(self, status: int, reason: str, source: str, detail: str) -> None:
        self.detail = detail
        self._finish(status, reason, source)

    def _finish(self, status: int, reason: str, source: str) -> None:
        self.status, self.reason, self.source = status, reason, source
        self.ended = time.monotonic()
