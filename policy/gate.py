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


@dataclass
class Verdict:
    """What the gate found out, step by step, and the refusal if any: the
    audit trail wants the caller and the image even when the upload is refused."""

    refusal: Decision | None = None
    identity: Identity | None = None
    image: Image | None = None
    owner: str | None = None  # the project charged: the image owner's
    usage: int = 0  # bytes the owner project stored before this upload
    limit: int = UNLIMITED

    def check_transferred(self, transferred: int) -> Decision | None:
        """The quota rule again, for a body whose size shows only as it streams."""
        return rules.check_quota(transferred, self.usage, self.limit)


class UploadGate:
    def __init__(self, config: Config, tokens: TokenValidator, glance: GlanceClient):
        self.config, self.tokens, self.glance = config, tokens, glance

    async def decide(self, req: UploadRequest) -> Verdict:
        verdict = Verdict()
        if not is_uuid(req.route.image_id):
            verdict.refusal = rules.bad_id(req.route.image_id)
            return verdict
        try:
            verdict.refusal = await self._decide(req, verdict)
        except InvalidToken as e:
            verdict.refusal = rules.bad_token(str(e))
        except Unavailable as e:
            verdict.refusal = rules.unavailable(e.dependency, e.detail)
        return verdict

    async def _decide(self, req: UploadRequest, verdict: Verdict) -> Decision | None:
        verdict.identity = identity = await self.tokens.validate(req.tokens)
        refusal = (rules.check_media_type(req.content_type)
                   or rules.check_body(req.content_length, req.chunked))
        if refusal:
            return refusal
        verdict.image = image = await self.glance.image(req.route.image_id, req.tokens[0].strip(), identity)
        if refusal := rules.check_image(image, identity, self.config.admin_roles):
            return refusal
        assert image is not None
        verdict.owner = owner = image.owner or identity.project_id
        verdict.limit = self.config.quota.limit_for(owner)
        if verdict.limit != UNLIMITED:
            verdict.usage = await self.glance.usage(owner)
        return verdict.check_transferred(req.content_length or 0)
