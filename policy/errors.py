"""Refusals in Glance's own error shape: {"code", "title", "message"}."""

from __future__ import annotations

import json
import uuid
from http import HTTPStatus

from policy.decision import Decision


def request_id() -> str:
    return f"req-{uuid.uuid4()}"


def render(decision: Decision, req_id: str, keystone_url: str = "") -> tuple[dict[str, str], bytes]:
    """Headers and body of the refusal; the connection is closed after it.
    keystone_url: where a 401's WWW-Authenticate sends the client."""
    body = json.dumps({
        "code": decision.status,
        "title": HTTPStatus(decision.status).phrase,
        "message": decision.message,
    }).encode()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "X-Openstack-Request-Id": req_id,
        "Connection": "close",
    }
    if decision.status == 401:
        headers["WWW-Authenticate"] = f'Keystone uri="{keystone_url}"'
    return headers, body
