"""The audit trail: one JSON line per upload decision (allowed, refused or
aborted), answering "who uploaded what". Never the token."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from addons.exchange import Exchange
from policy.refusal import Refusal


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
        **({"quota": exchange.figures.record()} if exchange.figures else {}),
        **({"would_refuse": _would_refuse(would)} if (would := exchange.quota_would_refuse) else {}),
    }


def _would_refuse(refusal: Refusal) -> dict:
    """Dry-run: the refusal a request passed, with its figures."""
    return {"message": refusal.message, **(refusal.figures.record() if refusal.figures else {})}


class AuditTrail:
    """Writes to a file, or to stdout ("-"). Each line is one write() to a
    descriptor opened with O_APPEND, so the lines of several workers appending
    to one file never interleave. A file moved away (logrotate) is reopened
    at the next line, as logging's WatchedFileHandler does."""

    def __init__(self, path: str):
        self.path = path
        self._fd = 1 if path == "-" else self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def _reopen_if_moved(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        fst = os.fstat(self._fd)
        if st is None or (st.st_dev, st.st_ino) != (fst.st_dev, fst.st_ino):
            os.close(self._fd)
            self._fd = self._open()

    def write(self, exchange: Exchange) -> None:
        line = (json.dumps(record(exchange), separators=(",", ":")) + "\n").encode()
        if self.path != "-":
            self._reopen_if_moved()
        while line:  # one write() for a file; a pipe (stdout) may take a long line in parts
            line = line[os.write(self._fd, line):]

    def close(self) -> None:
        if self.path != "-":
            os.close(self._fd)
