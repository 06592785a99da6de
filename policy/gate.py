"""The upload policy in the order the spec's table is enforced, all from the
request headers, before any body byte is forwarded."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from policy import decision as rules
from policy import imports
from policy.config import Config
from policy.decision import Identity, Image
from policy.exceptions import InvalidToken, Unavailable
from policy.glance import GlanceClient
from policy.identity import TokenValidator
from policy.imports import ImportBody
from policy.quota.reservations import HardQuota, Hold
from policy.refusal import Refusal
from policy.routes import STAGE, Route, is_uuid

log = logging.getLogger("glance_gate.gate")

# Import methods whose data comes from elsewhere, in an amount nobody knows beforehand.
REMOTE_IMPORTS = frozenset({"web-download", "glance-download"})


@dataclass(frozen=True)
class UploadRequest:
    route: Route
    tokens: list[str]
    content_type: str | None
    content_length: int | None
    chunked: bool
    image_size: bytes | None = None  # x-openstack-image-size as sent, for a chunked body

    @property
    def declared_size(self) -> int | None:
        """A size of 0 or less says nothing: the body is reserved as it streams."""
        if not self.chunked:
            return self.content_length
        size = rules.parse_image_size(self.image_size)
        return size if size and size > 0 else None


@dataclass
class Verdict:
    """What the gate found out, step by step, and the refusal if any: the
    audit trail wants the caller and the image even when the upload is refused."""

    refusal: Refusal | None = None
    identity: Identity | None = None
    image: Image | None = None
    owner: str | None = None  # the project charged: the image owner's
    hold: Hold | None = None  # the owner's reservation, when it has a quota
    import_method: str | None = None  # imports only
    would_refuse: Refusal | None = None  # dry-run: the quota refusal the request passed

    def quota_would_refuse(self) -> Refusal | None:
        """Dry-run: the one quota refusal the request passed, at its decision or mid-stream."""
        return self.would_refuse or (self.hold.would_refuse if self.hold else None)

    def check_transferred(self, transferred: int) -> Refusal | None:
        """The quota rule again, for a body whose size shows only as it streams."""
        return self.hold.check(transferred) if self.hold else None


class UploadGate:
    def __init__(self, config: Config, tokens: TokenValidator, glance: GlanceClient, quota: HardQuota):
        self.config, self.tokens, self.glance, self.quota = config, tokens, glance, quota

    async def decide(self, req: UploadRequest) -> Verdict:
        return await self._run(req.route, self._decide, req)

    async def decide_import(self, route: Route, tokens: list[str], body: ImportBody) -> Verdict:
        """POST /v2/images/{id}/import: the same caller and owner rules as an
        upload, and the quota for the data the import will store."""
        return await self._run(route, self._decide_import, route, tokens, body)

    async def decide_create(self, tokens: list[str], body: bytes) -> Verdict:
        """POST /v2/images: one more image for its owner's image_count_total.
        A token Glance will refuse, or a body it will, is left to Glance."""
        verdict = Verdict()
        try:
            verdict.identity = identity = await self.tokens.validate(tokens)
            try:
                owner = json.loads(body).get("owner")
            except (ValueError, TypeError, AttributeError):
                return verdict  # Glance refuses a malformed create itself
            verdict.owner = owner if isinstance(owner, str) and owner else identity.project_id
            if verdict.owner != identity.project_id and not identity.roles & self.config.policy.admin_roles:
                return verdict  # Glance lets only an admin create an image another project owns: 403
            verdict.refusal = await self._reserve(verdict, 1, rules.IMAGES, upload=False)
        except InvalidToken:
            pass
        except Unavailable as e:
            verdict.refusal = rules.unavailable(e.dependency, e.detail, e.reason)
        return verdict

    async def _run(self, route: Route, decide, *args) -> Verdict:
        verdict = Verdict()
        if not is_uuid(route.image_id):
            verdict.refusal = rules.bad_id(route.image_id)
            return verdict
        try:
            verdict.refusal = await decide(*args, verdict)
        except InvalidToken as e:
            verdict.refusal = rules.bad_token(str(e))
        except Unavailable as e:
            verdict.refusal = rules.unavailable(e.dependency, e.detail, e.reason)
        return verdict

    async def _decide(self, req: UploadRequest, verdict: Verdict) -> Refusal | None:
        verdict.identity = identity = await self.tokens.validate(req.tokens)
        refusal = (rules.check_media_type(req.content_type)
                   or rules.check_image_size(req.image_size)
                   or rules.check_body(req.content_length, req.chunked))
        if refusal:
            return refusal
        verdict.image = image = await self.glance.image(req.route.image_id, req.tokens[0].strip(), identity)
        if refusal := rules.check_image(image, identity, self.config.policy.admin_roles):
            return refusal
        assert image is not None
        verdict.owner = image.owner or identity.project_id
        return await self._reserve(verdict, req.declared_size,
                                   rules.BYTES_STAGED if req.route.kind == STAGE else rules.BYTES_STORED)

    async def _decide_import(self, route: Route, tokens: list[str], body: ImportBody,
                             verdict: Verdict) -> Refusal | None:
        verdict.identity = identity = await self.tokens.validate(tokens)
        verdict.image = image = await self.glance.image(route.image_id, tokens[0].strip(), identity)
        if refusal := rules.check_owner(image, identity, self.config.policy.admin_roles):
            return refusal
        assert image is not None
        verdict.owner = image.owner or identity.project_id
        request = imports.parse(body)
        if isinstance(request, Refusal):
            return request
        verdict.import_method = request.method
        if request.method in REMOTE_IMPORTS:
            if self.config.quota.remote_import == "allow":
                return None
            if self.quota.dry_run:
                verdict.would_refuse = rules.unknown_size_import(request.method)
                return None
            return rules.unknown_size_import(request.method)
        copies = await self._new_copies(image, request)
        if not copies or not image.size:
            return None  # nothing to store, or nothing staged: Glance answers
        return await self._reserve(verdict, image.size * copies)

    async def _new_copies(self, image: Image, request: imports.ImportRequest) -> int:
        """How many more copies of the data the import stores."""
        if request.method != "copy-image":  # glance-direct: the staged data, into each target store
            return max(1, len(request.stores or ()))
        if request.all_stores:
            targets = set((await self.glance.stores())[0])
        elif request.stores is not None:
            targets = set(request.stores)
        else:
            targets = {(await self.glance.stores())[1]}
        return len(targets - set(image.stores))

    async def _reserve(self, verdict: Verdict, size: int | None, resource: str = rules.BYTES_STORED,
                       upload: bool = True) -> Refusal | None:
        assert verdict.owner
        try:
            verdict.hold, refusal = await self.quota.reserve(verdict.owner, size, resource, upload)
        except Unavailable as e:
            if e.dependency != "redis" or self.config.quota.ledger_down == "refuse":
                raise
            log.warning("quota ledger down, upload allowed unaccounted (quota.ledger_down = allow): %s", e)
            return None
        return refusal
