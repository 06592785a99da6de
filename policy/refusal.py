"""A refusal: what a rule (policy/decision.py) answers instead of letting a
request through, and how it is written, in Glance's own error shape:
{"code", "title", "message"}."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from http import HTTPStatus


@dataclass(frozen=True)
class QuotaFigures:
    """Why a quota refuses: the owner project's figures as the ledger read them."""

    resource: str  # Glance's unified-limit name, e.g. image_size_total
    project: str
    used: int  # usage and reservations of other requests, bytes or a count
    limit: int
    needed: int  # what this request needs (bytes or a count)

    def record(self) -> dict:
        return {"resource": self.resource, "project": self.project, "used": self.used,
                "limit": self.limit, "needed": self.needed}


@dataclass(frozen=True)
class Refusal:
    """A request the gateway answers itself, never forwards: a rule's verdict
    (policy/decision.py), or a dependency failing closed."""

    status: int
    reason: str
    message: str
    figures: QuotaFigures | None = None  # a quota refusal's numbers, for the audit trail


def request_id() -> str:
    return f"req-{uuid.uuid4()}"


def render(refusal: Refusal, req_id: str, keystone_url: str = "") -> tuple[dict[str, str], bytes]:
    """Headers and body of the refusal; the connection is closed after it.
    keystone_url: where a 401's WWW-Authenticate sends the client."""
    body = json.dumps({
        "code": refusal.status,
        "title": HTTPStatus(refusal.status).phrase,
        "message": refusal.message,
    }).encode()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "X-Openstack-Request-Id": req_id,
        "Connection": "close",
    }
    if refusal.status == 401:
        headers["WWW-Authenticate"] = f'Keystone uri="{keystone_url}"'
    return headers, body
