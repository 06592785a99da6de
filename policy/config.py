"""config.toml as a declarative schema, one model per TOML table: each key's
type, default and bounds are stated once, here. Unknown keys, wrong types and
URL forms the gateway would misread are refused at start, naming the key's
full path (`quota.ledger_dwn: unknown key`)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, model_validator
from pydantic_core import PydanticCustomError

UNLIMITED = -1


class ConfigError(ValueError):
    pass


class Address(NamedTuple):
    host: str
    port: int


def _address(value: object) -> Address:
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be host:port, got {value!r}")
    return Address(host.strip("[]"), int(port))


def _url(value: object, *, strip: str = "") -> str:
    """An http(s) URL without trailing slashes, or a final `strip` segment."""
    parts = urlsplit(value) if isinstance(value, str) else None
    if not parts or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"must have no query or fragment, got {value!r}")
    url = value.rstrip("/")
    if strip and url.endswith(strip):
        url = url.removesuffix(strip).rstrip("/")
    return url


def _service_root(value: object) -> str:
    """Glance is the root of its host: the gateway appends /v2/... to it, and
    mitmproxy's reverse mode forwards the client's path unchanged."""
    url = _url(value)
    if urlsplit(url).path:
        raise ValueError(f"must be scheme://host:port with no path, got {value!r}")
    return url


def _keystone_root(value: object) -> str:
    # Users copy the catalog's identity endpoint, which ends in /v3: the gateway adds it itself.
    url = _url(value, strip="/v3")
    if urlsplit(url).path.rsplit("/", 1)[-1] in ("v2.0", "v3"):
        raise ValueError(f"must be Keystone's root, without a version, got {value!r}")
    return url


HostPort = Annotated[Address, PlainValidator(_address)]
Url = Annotated[str, PlainValidator(_url)]
Text = Annotated[str, Field(min_length=1)]
Seconds = Annotated[float, Field(gt=0)]
WholeSeconds = Annotated[int, Field(gt=0)]
Count = Annotated[int, Field(ge=UNLIMITED)]  # -1: unlimited


class Table(BaseModel):
    # strict: 0.5 is not an int, "5" not a number, true not 1.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)


def _missing(key: str) -> PydanticCustomError:
    return PydanticCustomError("missing", "required", {"key": key})


def _workers(value: object) -> int:
    if value == "auto":
        return len(os.sched_getaffinity(0))  # one per core this process may run on
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'must be a whole number >= 1, or "auto", got {value!r}')
    return value


class Gateway(Table):
    listen: HostPort
    upstream: Annotated[str, PlainValidator(_service_root)]
    metrics: HostPort
    upstream_timeout_seconds: Seconds = 30
    # mitmproxy's tcp_timeout: a connection silent both ways this long is closed
    client_idle_timeout_seconds: WholeSeconds = 60
    workers: Annotated[int, PlainValidator(_workers)] = 1  # processes serving `listen`
    drain_seconds: Seconds = 30  # on SIGTERM or reload, how long in-flight requests may finish


class Keystone(Table):
    url: Annotated[str, PlainValidator(_keystone_root)]
    username: Text
    password: Text
    project: Text
    user_domain: Text = "Default"
    project_domain: Text = "Default"
    cache_seconds: WholeSeconds = 300
    timeout_seconds: Seconds = 5


# Asymmetric signatures only: an HMAC algorithm would let anyone holding the
# (public) verification key sign tokens, and "none" signs nothing.
Algorithm = Literal["ES256", "ES384", "ES512", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]


class IdentityConf(Table):
    """How tokens are validated; README "Identity modes"."""

    mode: Literal["keystone", "keystone-jws", "jwt"] = "keystone"
    trusted_auth: bool = False  # Glance runs without authtoken: the gateway injects the identity
    algorithms: Annotated[tuple[Algorithm, ...], Field(min_length=1, strict=False)] = ("ES256",)
    leeway_seconds: Annotated[float, Field(ge=0, le=60)] = 5
    # keystone-jws
    jws_public_keys: str = ""  # directory of Keystone's JWS public keys
    jws_check: Literal["offline", "confirm"] = "offline"
    # jwt
    jwks_url: Annotated[str, PlainValidator(lambda v: _url(v) if v else v)] = ""
    jwks_cache_seconds: Seconds = 300
    jwks_refetch_cooldown_seconds: Annotated[float, Field(ge=0)] = 30
    issuer: str = ""
    audience: str = ""
    user_claim: Text = "sub"
    project_claim: Text = "project_id"
    roles_claim: Text = "roles"

    @model_validator(mode="after")
    def _per_mode(self) -> IdentityConf:
        if self.mode == "keystone-jws":
            if not self.jws_public_keys:
                raise _missing("jws_public_keys")
            if self.trusted_auth and self.jws_check == "offline":
                # Glance needs the caller's roles, and offline JWS tokens carry none.
                raise PydanticCustomError("conflict", 'needs roles: use jws_check = "confirm" with keystone-jws',
                                          {"key": "trusted_auth"})
        if self.mode == "jwt":
            for key in ("jwks_url", "issuer", "audience"):
                if not getattr(self, key):
                    raise _missing(key)
            if not self.trusted_auth:
                # Glance's authtoken cannot read the identity provider's tokens.
                raise PydanticCustomError("conflict", 'must be true with mode = "jwt"', {"key": "trusted_auth"})
        return self


class Policy(Table):
    admin_roles: Annotated[frozenset[Text], Field(strict=False)] = frozenset({"admin"})


class Audit(Table):
    path: Text = "-"  # a file, or "-" for stdout


class Quota(Table):
    default_bytes: Count
    projects: dict[str, Count] = {}
    max_uploads: Count = UNLIMITED  # concurrent uploads per project
    keystone_limits: bool = False  # read image_size_total from Keystone's unified limits
    limits_cache_seconds: Seconds = 60
    usage_cache_seconds: Seconds = 2
    # reservation step of an upload of unknown size; a step must outrun one socket read
    chunk_bytes: Annotated[int, Field(ge=1024 * 1024)] = 8 * 1024 * 1024
    ledger: Literal["memory", "redis"] = "memory"
    redis_url: str = ""
    redis_timeout_seconds: Seconds = 1
    lease_seconds: Seconds = 30
    ledger_down: Literal["refuse", "allow"] = "refuse"  # what an upload gets when the Redis ledger is down
    remote_import: Literal["refuse", "allow"] = "refuse"  # web-download / glance-download, size unknown

    @model_validator(mode="after")
    def _redis(self) -> Quota:
        if self.ledger == "redis" and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise PydanticCustomError("conflict", 'must be a redis:// URL with ledger = "redis"', {"key": "redis_url"})
        return self

    def limit_for(self, project_id: str) -> int:
        """Byte limit for a project; UNLIMITED (-1) means no limit."""
        return self.projects.get(project_id, self.default_bytes)


class Config(Table):
    gateway: Gateway
    keystone: Keystone
    identity: IdentityConf = IdentityConf()
    policy: Policy = Policy()
    audit: Audit = Audit()
    quota: Quota

    @model_validator(mode="after")
    def _shared_ledger(self) -> Config:
        if self.gateway.workers > 1 and self.quota.ledger == "memory":
            # N memory ledgers would each grant the whole quota.
            raise PydanticCustomError(
                "conflict", 'needs a shared ledger: set quota.ledger = "redis" (quota.ledger = "memory" '
                "is one process's), or workers = 1", {"key": "gateway.workers"})
        return self


def _message(error: dict) -> str:
    loc = [*map(str, error["loc"]), *([error["ctx"]["key"]] if "key" in error.get("ctx", {}) else [])]
    match error["type"]:
        case "extra_forbidden":
            message = "unknown section" if len(loc) == 1 else "unknown key"
        case "missing":
            message = "required"
        case "value_error":  # our own validators: their message as written
            message = str(error["ctx"]["error"])
        case "model_type" | "dict_type":
            message = "must be a table"
        case "int_type" | "int_from_float" | "float_type" | "bool_type":
            message = f"{error['msg'][0].lower()}{error['msg'][1:]}, got {error['input']!r}"
        case _:
            message = error["msg"][0].lower() + error["msg"][1:]
    return f"{'.'.join(loc)}: {message}"


def parse(data: dict) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError("; ".join(_message(error) for error in e.errors())) from None


def load(path: str | Path) -> Config:
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    return parse(parse_toml(text, path))


def parse_toml(text: bytes, path: str | Path) -> dict:
    try:
        return tomllib.loads(text.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
