"""The policy's dependencies with fixed answers, for tests that need no cloud."""

from __future__ import annotations

from policy import config as configuration
from policy.decision import BYTES_STORED, Identity, Image
from policy.gate import UploadGate
from policy.identity import TokenCache, TokenValidator
from policy.quota import hard_quota


class Checker:
    """Token checks with a fixed outcome, as the configured mode would give them."""

    method = "test"

    def __init__(self, outcome: Identity | Exception):
        self.outcome = outcome

    async def validate(self, token: str) -> Identity:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class Glance:
    """Glance's answers, fixed: the image (or why there is none), the owner's
    usage, and what the image stores (owner, bytes), which a test may change."""

    def __init__(self, image: Image | None | Exception, usage: int | Exception):
        self._image, self._usage = image, usage
        self.stored: tuple[str, int] | None = None

    async def footprint(self, image_id: str) -> tuple[str, dict[str, int]] | None:
        return self.stored and (self.stored[0], {BYTES_STORED: self.stored[1]})

    async def image(self, image_id: str, token: str, caller: Identity) -> Image | None:
        if isinstance(self._image, Exception):
            raise self._image
        return self._image

    async def usage(self, project_id: str, resource: str = BYTES_STORED) -> int:
        if isinstance(self._usage, Exception):
            raise self._usage
        return self._usage if resource == BYTES_STORED else 0


def config(limit: int, audit: str = "-", identity: dict | None = None, **quota) -> configuration.Config:
    """A valid config whose dependencies are never called; `limit`: every project's quota."""
    return configuration.parse({
        "gateway": {"listen": "127.0.0.1:1", "upstream": "http://glance", "metrics": "127.0.0.1:2"},
        "keystone": {"url": "http://keystone", "username": "u", "password": "p", "project": "p"},
        "policy": {"admin_roles": ["admin"]}, "audit": {"path": audit}, "identity": identity or {},
        "quota": {"default_bytes": limit, **quota}})


def upload_gate(conf: configuration.Config, outcome: Identity | Exception,
                image: Image | None | Exception, usage: int | Exception) -> UploadGate:
    """The real gate and quota, on a token check and a Glance with fixed answers."""
    glance = Glance(image, usage)
    return UploadGate(conf, TokenValidator(Checker(outcome), TokenCache(300)), glance,
                      hard_quota(conf, glance, service_token=None))
