"""config.toml as a declarative schema, one model per TOML table: each key's
type, default and bounds are stated once, here. Unknown keys, wrong types and
URL forms the gateway would misread are refused at start, naming the key's
full path (`quota.ledger_dwn: unknown key`)."""

from __future__ import annotations

import ipaddress
import os
import ssl
import tomllib
from pathlib import Path
from typing import Annotated, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from policy import exceptions
from policy.redis_client import SENTINEL_SCHEME, SentinelURL, is_sentinel

UNLIMITED = -1


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


def _ip(value: object) -> str:
    try:
        return str(ipaddress.ip_address(value if isinstance(value, str) else ""))
    except ValueError:
        raise ValueError(f"must be an IP address, got {value!r}") from None


def _readable(value: object) -> str:
    """A file the gateway can read now, or "" for none: a missing CA or key
    file is refused at start rather than failing every connection."""
    if not isinstance(value, str):
        raise ValueError(f"must be a path, got {value!r}")
    if value:
        try:
            Path(value).open("rb").close()
        except OSError as e:
            raise ValueError(f"cannot read {value}: {e.strerror}") from None
    return value


def _both(table: BaseModel, first: str, second: str) -> None:
    """Two keys that only mean something together."""
    for key, other in ((first, second), (second, first)):
        if getattr(table, key) and not getattr(table, other):
            raise _conflict(other, f"required with {key}")


def _loads(key: str, ca_file: str = "", cert_file: str = "", key_file: str = "") -> None:
    """The PEM files load as OpenSSL will load them for every connection."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if ca_file:
            context.load_verify_locations(ca_file)
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as e:
        raise _conflict(key, f"does not load: {e.reason or e}") from None


HostPort = Annotated[Address, PlainValidator(_address)]
IpAddress = Annotated[str, PlainValidator(_ip)]
File = Annotated[str, PlainValidator(_readable)]
Url = Annotated[str, PlainValidator(_url)]
Text = Annotated[str, Field(min_length=1)]
Seconds = Annotated[float, Field(gt=0)]
WholeSeconds = Annotated[int, Field(gt=0)]
Count = Annotated[int, Field(ge=UNLIMITED)]  # -1: unlimited


class Table(BaseModel):
    # strict: 0.5 is not an int, "5" not a number, true not 1.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)


def _missing(key: str, why: str = "required") -> PydanticCustomError:
    return PydanticCustomError("missing", why, {"key": key})


def _conflict(key: str, why: str) -> PydanticCustomError:
    return PydanticCustomError("conflict", why, {"key": key})


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
    # an upstream connection idle this long is not reused: below Glance's keep-alive (gunicorn: 2 s)
    upstream_keepalive_seconds: Seconds = 1
    # slow clients: a request head must be whole this long after the connection opened, or
    # after the previous answer ended; and a cap of open connections per client address
    request_head_seconds: Seconds = 30
    max_connections_per_client: Annotated[int, Field(ge=1)] = 128
    # after a refusal or a cut, what the client still sends is read and dropped this
    # long, so that a client that reads only once it has sent everything gets the answer
    linger_seconds: Annotated[float, Field(ge=0)] = 30  # 0: closed at once
    # load balancers whose X-Forwarded-For names the client, for that cap only
    trusted_proxies: Annotated[frozenset[IpAddress], Field(strict=False)] = frozenset()
    # HTTPS on `listen` (PEM, the chain after the certificate), and nothing else
    tls_cert_file: File = ""
    tls_key_file: File = ""
    # Glance's certificate is verified against this PEM bundle, else the system store
    upstream_ca_file: File = ""
    upstream_client_cert_file: File = ""  # mutual TLS to Glance
    upstream_client_key_file: File = ""

    @model_validator(mode="after")
    def _tls(self) -> Gateway:
        _both(self, "tls_cert_file", "tls_key_file")
        _both(self, "upstream_client_cert_file", "upstream_client_key_file")
        if not self.upstream.startswith("https:"):
            for key in ("upstream_ca_file", "upstream_client_cert_file"):
                if getattr(self, key):
                    raise _conflict(key, "needs an https:// upstream")
        _loads("tls_cert_file", cert_file=self.tls_cert_file, key_file=self.tls_key_file)
        _loads("upstream_ca_file", ca_file=self.upstream_ca_file)
        _loads("upstream_client_cert_file", cert_file=self.upstream_client_cert_file,
               key_file=self.upstream_client_key_file)
        return self


PASSWORD_ENV = "GLANCE_GATE_KEYSTONE_PASSWORD"


def _secret_file(path: str) -> str:
    """The first line of a secret file (a trailing newline is not part of it)."""
    return Path(path).read_text().split("\n", 1)[0] if path else ""


class Keystone(Table):
    url: Annotated[str, PlainValidator(_keystone_root)]
    ca_file: File = ""  # Keystone's certificate (and the JWKS URL's) is verified against this, else the system store
    # The gateway's own identity: a user and password (one of three ways), or an application credential.
    username: str = ""
    password: Annotated[str, Field(repr=False)] = ""
    password_file: File = ""
    project: str = ""
    user_domain: Text = "Default"
    project_domain: Text = "Default"
    application_credential_id: str = ""
    application_credential_secret_file: File = ""
    cache_seconds: WholeSeconds = 300
    timeout_seconds: Seconds = 5

    @model_validator(mode="after")
    def _identity(self) -> Keystone:
        given = [key for key, set_ in (("keystone.password", self.password), ("keystone.password_file", self.password_file),
                                       (PASSWORD_ENV, os.environ.get(PASSWORD_ENV)),
                                       ("keystone.application_credential_id", self.application_credential_id)) if set_]
        if len(given) != 1:
            raise _conflict("password", f"set exactly one of keystone.password, keystone.password_file, {PASSWORD_ENV} "
                                        f"or keystone.application_credential_id, got {', '.join(given) or 'none'}")
        if self.application_credential_id:
            _both(self, "application_credential_id", "application_credential_secret_file")
            for key in ("username", "project"):  # the credential's own user and project are used
                if getattr(self, key):
                    raise _conflict(key, "must be unset with application_credential_id")
        else:
            for key in ("username", "project"):
                if not getattr(self, key):
                    raise _missing(key)
            if self.application_credential_secret_file:
                raise _conflict("application_credential_secret_file", "needs application_credential_id")
        if not self.secret:  # a file with nothing in it
            raise _conflict(given[0].removeprefix("keystone.").replace("_id", "_secret_file"), "is empty")
        _loads("ca_file", ca_file=self.ca_file)
        return self

    @property
    def secret(self) -> str:
        """The password or the application credential's secret, wherever it is kept."""
        return (self.password or _secret_file(self.password_file) or os.environ.get(PASSWORD_ENV, "")
                or _secret_file(self.application_credential_secret_file))


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
    max_images: Count = UNLIMITED  # images per project (image_count_total)
    stage_bytes: Count | None = None  # staged bytes per project (image_stage_total); unset: the byte limit
    keystone_limits: bool = False  # read the limits from Keystone's unified limits
    region: str = ""  # Keystone's limits of this region apply ("": those with no region)
    limits_cache_seconds: Seconds = 60
    reconcile_seconds: Seconds = 300  # each project's usage re-listed at Glance this often
    # listings of a project's images at Glance at once (cold projects, reconciliation)
    max_listings: Annotated[int, Field(ge=1)] = 4
    # reservation step of an upload of unknown size; a step must outrun one socket read
    chunk_bytes: Annotated[int, Field(ge=1024 * 1024)] = 8 * 1024 * 1024
    # an upload of unknown size that finds no room at its start waits this long (paused) for some
    wait_seconds: Annotated[float, Field(ge=0, le=60)] = 5
    ledger: Literal["memory", "redis"] = "memory"
    redis_url: str = ""
    redis_timeout_seconds: Seconds = 1
    lease_seconds: Seconds = 30
    ledger_down: Literal["refuse", "allow"] = "refuse"  # what an upload gets when the Redis ledger is down
    remote_import: Literal["refuse", "allow"] = "refuse"  # web-download / glance-download, size unknown
    enforce: Literal["enforce", "dry-run"] = "enforce"  # dry-run: quota refusals only counted, for roll-outs
    warn_ratio: Annotated[float, Field(gt=0, le=1)] = 0.8  # usage/limit from which a project is near its limit
    location_add: Literal["refuse", "allow"] = "refuse"  # POST /v2/images/{id}/locations, size unknown

    @model_validator(mode="after")
    def _redis(self) -> Quota:
        if self.ledger == "redis" and not self.redis_url.startswith(("redis://", "rediss://", "unix://",
                                                                     SENTINEL_SCHEME)):
            raise PydanticCustomError("conflict", 'must be a redis:// or redis+sentinel:// URL with ledger = "redis"',
                                      {"key": "redis_url"})
        if self.ledger == "redis" and is_sentinel(self.redis_url):
            try:
                SentinelURL.parse(self.redis_url)
            except ValueError as e:
                raise PydanticCustomError("conflict", "{detail}", {"key": "redis_url", "detail": str(e)}) from None
        return self

    def limit_for(self, project_id: str, resource: str = "image_size_total") -> int:
        """A project's limit of a resource of Glance's (bytes, or a count); UNLIMITED (-1) means none."""
        if resource == "image_count_uploading":
            return self.max_uploads
        if resource == "image_count_total":
            return self.max_images
        if resource == "image_stage_total" and self.stage_bytes is not None:
            return self.stage_bytes
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

    @model_validator(mode="after")
    def _keystone_tls(self) -> Config:
        # It verifies Keystone and the JWKS URL: with neither on https, it would verify nothing.
        if self.keystone.ca_file and not any(url.startswith("https:")
                                             for url in (self.keystone.url, self.identity.jwks_url)):
            raise _conflict("keystone.ca_file", "needs an https:// keystone.url or identity.jwks_url")
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
        raise exceptions.ConfigError("; ".join(_message(error) for error in e.errors())) from None


def load(path: str | Path) -> Config:
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise exceptions.ConfigError(f"cannot read config {path}: {e.strerror}") from None
    return parse(parse_toml(text, path))


def parse_toml(text: bytes, path: str | Path) -> dict:
    try:
        return tomllib.loads(text.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise exceptions.ConfigError(f"{path} is not valid TOML: {e}") from None
