"""addons/forwarded.py: what the gateway forwards of a client's headers."""

from __future__ import annotations

import pytest

from tests.support.routing import ID, Variant, through_gateway


@pytest.mark.parametrize("name", ["SCRIPT_NAME", "Script_Name", "PATH_INFO", "REMOTE_USER", "X_Auth_Token",
                                  "X_Identity_Status", "X_Roles", "X-Forwarded-Prefix", "X_Forwarded_Prefix",
                                  "X-Forwarded-Ssl", "X-Forwarded-Protocol", "Forwarded"])
def test_headers_a_wsgi_server_would_take_never_reach_glance(name):
    _, head = through_gateway(Variant("PUT", f"/x/v2/images/{ID}/file", ((name, "/x"),)))
    assert f"\n{name}:".lower().encode() not in head.lower(), head
