"""The identity headers of trusted-auth mode (policy/identity/trusted.py):
every one a client could forge is recognised and stripped; the gateway's own
injection names the checked caller, or says Invalid."""

from __future__ import annotations

import pytest

from policy.decision import Identity
from policy.identity.trusted import identity_headers, is_identity_header


@pytest.mark.parametrize("name", ["X-Identity-Status", "x-roles", "X-Role", "X-User-Id", "X-User",
                                  "X-Project-Id", "X-Project-Domain-Name", "X-Tenant-Id", "X-Tenant",
                                  "X-Domain-Id", "X-Service-Roles", "X-Service-Catalog", "X-Service-Token",
                                  "X-Service-Identity-Status", "X-Is-Admin-Project", "OpenStack-System-Scope"])
def test_identity_headers_stripped(name):
    assert is_identity_header(name)


@pytest.mark.parametrize("name", ["X-Auth-Token", "Content-Type", "X-Openstack-Request-Id", "X-Image-Meta-Name"])
def test_other_headers_kept(name):
    assert not is_identity_header(name)


def test_injected_headers():
    headers = identity_headers(Identity("u", "p", frozenset({"reader", "member"}), 0))
    assert headers["X-Identity-Status"] == "Confirmed"
    assert (headers["X-User-Id"], headers["X-Project-Id"], headers["X-Roles"]) == ("u", "p", "member,reader")
    assert all(is_identity_header(name) for name in headers)  # whatever it injects, it strips first
    assert identity_headers(None) == {"X-Identity-Status": "Invalid"}
