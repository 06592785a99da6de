"""The audit trail: one JSON line per upload decision (allowed, refused or
aborted), answering "who uploaded what". Never the token."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import datetime, timezone

from addons.exchange import Exchange


def record(exchange: Exchange) -> dict:
    verdict = exchange.verdict
    identity = verdict.identity if verdict else None
    image = verdict.image if verdict else None
    return {
        "timestamp": datetime.fromtimestamp(exchange.wall_start, timezone.utc).isoformat(timespec="milliseconds"),
        "request_id": exchange.request_id,
        "route": exchange.route.kind,
        "user_id": identity.user_id if identity else None,
        "project_id": identity.project_id if identity else None,
        "image_id": exchange.route.image_id,
        "image_owner": image.owner if image else None,
        "bytes_declared": exchange.declared,
        "bytes_transferred": exchange.transferred,
        "status": exchange.status,
        "reason": exchange.reason,
        "source": exchange.source,
        "upstream_status": exchange.upstream_status,
        "duration_seconds": round(exchange.duration, 6),
        "client": exchange.client,
        **({"detail": exchange.detail} if exchange.detail else {}),
    }


class AuditTrail:
    """Writes to a file (reopened when logrotate moves it) or to stdout ("-")."""

    def __init__(self, path: str):
        self.path = path
        self._log = logging.getLogger(f"glance_gate.audit.{id(self)}")
        self._log.propagate = False  # not mixed into the proxy's own log
        self._log.setLevel(logging.INFO)
        handler = (logging.StreamHandler(sys.stdout) if path == "-"
                   else logging.handlers.WatchedFileHandler(path, encoding="utf-8"))
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._log.addHandler(handler)
        self._handler = handler

    def write(self, exchange: Exchange) -> None:
        self._log.info(json.dumps(record(exchange), separators=(",", ":")))

    def close(self) -> None:
        self._log.removeHandler(self._handler)
        self._handler.close()
