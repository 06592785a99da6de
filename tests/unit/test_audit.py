"""The audit trail (addons/audit.py): one JSON line per upload decision that
says who uploaded what, never the token, and survives logrotate."""

from __future__ import annotations

import json
import os

from addons.audit import AuditTrail, record
from addons.exchange import Exchange
from policy import decision as rules
from policy.decision import QuotaFigures
from policy.refusal import request_id
from policy.routes import Route
from tests.support.addon_flows import IMAGE_ID


def refused(figures: QuotaFigures | None = None) -> Exchange:
    ex = Exchange(Route("upload", IMAGE_ID), "PUT", "192.0.2.5", request_id(), declared=4096)
    ex.refuse(rules.quota_exceeded(figures) if figures else rules.bad_token("expired"))
    return ex


def test_a_line_says_who_uploaded_what_and_how_it_ended():
    line = record(refused())
    assert {k: line[k] for k in ("route", "image_id", "bytes_declared", "bytes_transferred", "status", "reason",
                                 "source", "client")} == \
        {"route": "upload", "image_id": IMAGE_ID, "bytes_declared": 4096, "bytes_transferred": 0, "status": 401,
         "reason": "token", "source": "gateway", "client": "192.0.2.5"}
    assert line["user_id"] is None and line["timestamp"].endswith("+00:00")
    assert "token" not in json.dumps({k: v for k, v in line.items() if k != "reason"})


def test_a_quota_refusal_carries_its_figures():
    line = record(refused(QuotaFigures("image_size_total", "projQ", 4 << 20, 5 << 20, 2 << 20)))
    assert line["quota"] == {"resource": "image_size_total", "project": "projQ", "used": 4 << 20,
                             "limit": 5 << 20, "needed": 2 << 20}


def test_lines_append_and_a_rotated_file_is_reopened(tmp_path):
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(str(path))
    trail.write(refused())
    os.rename(path, tmp_path / "audit.jsonl.1")  # logrotate
    trail.write(refused())
    trail.write(refused())
    trail.close()
    assert len((tmp_path / "audit.jsonl.1").read_text().splitlines()) == 1
    assert [json.loads(line)["status"] for line in path.read_text().splitlines()] == [401, 401]
