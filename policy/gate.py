"""The upload policy in the order the spec's table is enforced, all from the
request headers, before any body byte is forwarded."""

from __future__ import annotations

from dataclasses import dataclass

from policy import decision as rules
from policy.config import UNLIMITED, Config
from policy.decision import Decision, Identity, Image
from policy.glance import GlanceClient
from policy.identity import InvalidToken, TokenValidator, Unavailable
from policy.routes import Route, is_uuid


@dataclass(frozen=True)
class UploadRequest:
    route: Route
    tokens: list[str]
    content_type: str | None
    content_length: int | None
    chunked: bool


@dataclass(frozen=True)
class Allowed:
    identity: Identity
    image: Image
    usage: int  # bytes the owner project stored before this upload
    limit: int  # its quota, or UNLIMITED

    def check_transferred(self, transferred: int) -> Decision | None:
        """The quota rule again, for a body whose size shows only as it streams."""
        return rules.check_quota(transferred, self.usage, self.limit)


class UploadGate:
    def __init__(self, config: Config, tokens: TokenValidator, glance: GlanceClient):
        self.config, self.tokens, self.glance = config, tokens, glance

    async def decide(self, req: UploadRequest) -> Decision | Allowed:
        if not is_uuid(req.route.image_id):
            return rules.bad_id(req.route.image_id)
        try:
            return await self._decide(req)
        except InvalidToken as e:
            return rules.bad_token(str(e))
        except Unavailable as e:
            return rules.unavailable(e.dependency, e.detail)

    async def _decide(self, req: UploadRequest) -> Decision | Allowed:
        identity = await self.tokens.validate(req.tokens)
        refusal = (rules.check_media_type(req.content_type)
                   or rules.check_body(req.content_length, req.chunked))
        if refusal:
            return refusal
        image = await self.glance.image(req.route.image_id, req.tokens[0].strip())
        if refusal := rules.check_image(image, identity, self.config.admin_roles):
            return refusal
        assert image is not None
        owner = image.owner or identity.project_id  # the quota charged is the owner's
        limit = self.config.quota.limit_for(owner)
        usage = 0 if limit == UNLIMITED else await self.glance.usage(owner)
        allowed = Allowed(identity, image, usage, limit)
        return allowed.check_transferred(req.content_length or 0) or allowed
