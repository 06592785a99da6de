"""Trusted-auth mode: Glance runs without authtoken and believes the identity
headers it receives, so the gateway plays keystonemiddleware's part: remove
every identity header a client sent, then set its own, each exactly once."""

from __future__ import annotations

from collections.abc import Iterable

from policy.decision import Identity

# keystonemiddleware's auth_token (_request.py) removes these: X-Identity-Status,
# X-Service-Identity-Status, X-Service-Catalog, X-Is-Admin-Project, the
# _DEPRECATED_HEADER_MAP (X-Role, X-User, X-Tenant-Id, X-Tenant-Name, X-Tenant)
# and _HEADER_TEMPLATE for the user and the service (X-Domain-*, X-Project-*,
# X-User-*, X-Roles, X-Service-*). The prefixes cover them all, and any future
# variant; OpenStack-System-Scope is read by oslo.context but was not removed.
STRIPPED_PREFIXES = ("x-identity-", "x-service-", "x-user", "x-project", "x-tenant", "x-domain",
                     "x-role", "x-is-admin-project", "openstack-system-scope")

# Version discovery and health: Glance's keystone pipeline answers these
# before authtoken, so they need no token here either.
UNAUTHENTICATED_PATHS = frozenset({"/", "/versions", "/healthcheck"})


def is_identity_header(name: str) -> bool:
    return name.lower().startswith(STRIPPED_PREFIXES)


def identity_headers(identity: Identity | None) -> dict[str, str]:
    """The headers Glance's context middleware reads, one value each. None:
    an anonymous request, which Glance refuses unless it is discovery."""
    if identity is None:
        return {"X-Identity-Status": "Invalid"}
    return {
        "X-Identity-Status": "Confirmed",  # Glance wants exactly this value
        "X-User-Id": identity.user_id,
        "X-Project-Id": identity.project_id,
        "X-Roles": ",".join(sorted(identity.roles)),
        # oslo.context takes a missing header for "true"
        "X-Is-Admin-Project": "False",
    }


def service_identity(admin_roles: Iterable[str]) -> Identity:
    """The gateway's own identity towards a Glance that trusts it: it reads
    every project's usage, which takes an admin role."""
    return Identity(user_id="glance-gate", project_id="glance-gate",
                    roles=frozenset(admin_roles), expires_at=float("inf"))


class TrustedCredentials:
    """The gateway's own calls to a Glance that trusts its identity headers."""

    fix = "name Glance's admin role (admin by default) in policy.admin_roles"

    def __init__(self, admin_roles: Iterable[str]):
        self._service = identity_headers(service_identity(admin_roles))

    def caller(self, token: str, identity: Identity) -> dict[str, str]:
        return identity_headers(identity)

    async def service(self) -> dict[str, str]:
        return self._service
