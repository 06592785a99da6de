"""A refusal as the client reads it (policy/refusal.py): Glance's JSON error
shape, a request id, the connection closed, and a 401 that says where to log in."""

from __future__ import annotations

import json
import re

from policy import decision as rules
from policy.refusal import render, request_id


def test_a_refusal_is_written_in_glances_error_shape():
    headers, body = render(rules.check_media_type("text/plain"), "req-1")
    assert json.loads(body) == {"code": 415, "title": "Unsupported Media Type",
                                "message": "Content-Type 'text/plain' is not supported; "
                                           "image data must be application/octet-stream."}
    assert headers == {"Content-Type": "application/json", "Content-Length": str(len(body)),
                       "X-Openstack-Request-Id": "req-1", "Connection": "close"}


def test_a_401_names_keystone_and_no_other_refusal_does():
    headers, body = render(rules.bad_token("no X-Auth-Token header"), "req-2", "http://keystone:5000")
    assert headers["WWW-Authenticate"] == 'Keystone uri="http://keystone:5000"'
    assert json.loads(body)["title"] == "Unauthorized"
    assert "WWW-Authenticate" not in render(rules.internal(), "req-3", "http://keystone:5000")[0]


def test_request_ids_look_like_glances_and_differ():
    first, second = request_id(), request_id()
    assert re.fullmatch(r"req-[0-9a-f-]{36}", first) and first != second
