"""Reads and validates config.toml. Every error names the key at fault."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

UNLIMITED = -1


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Gateway:
    listen_host: str
    listen_port: int
    upstream: str
    metrics_host: str
    metrics_port: int


@dataclass(frozen=True)
class Keystone:
    url: str
    username: str
    password: str
    project: str
    user_domain: str
    project_domain: str
    cache_seconds: int
    timeout_seconds: float


# Asymmetric signatures only: an HMAC algorithm would let anyone holding the
# (public) verification key sign tokens, and "none" signs nothing.
SIGNATURE_ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "EdDSA", "RS256", "RS384", "RS512",
                                  "PS256", "PS384", "PS512"})
IDENTITY_MODES = ("keystone", "keystone-jws", "jwt")
JWS_CHECKS = ("offline", "confirm")
MAX_LEEWAY_SECONDS = 60


@dataclass(frozen=True)
class IdentityConf:
    """How tokens are validated; README "Identity modes"."""

    mode: str = "keystone"
    trusted_auth: bool = False  # Glance runs without authtoken: the gateway injects the identity
    algorithms: tuple[str, ...] = ("ES256",)
    leeway_seconds: float = 5
    # keystone-jws
    jws_public_keys: str = ""  # directory of Keystone's JWS public keys
    jws_check: str = "offline"
    # jwt
    jwks_url: str = ""
    jwks_cache_seconds: float = 300
    jwks_refetch_cooldown_seconds: float = 30
    issuer: str = ""
    audience: str = ""
    user_claim: str = "sub"
    project_claim: str = "project_id"
    roles_claim: str = "roles"


LEDGERS = ("memory", "redis")
LEDGER_DOWN = ("refuse", "allow")  # what an upload gets when the Redis ledger is down
REMOTE_IMPORT = ("refuse", "allow")  # web-download / glance-download, whose size is unknown


@dataclass(frozen=True)
class Quota:
    default_bytes: int
    projects: dict[str, int] = field(default_factory=dict)
    max_uploads: int = UNLIMITED  # concurrent uploads per project
    keystone_limits: bool = False  # read image_size_total from Keystone's unified limits
    limits_cache_seconds: float = 60
    usage_cache_seconds: float = 2
    chunk_bytes: int = 8 * 1024 * 1024  # reservation step of an upload of unknown size
    ledger: str = "memory"
    redis_url: str = ""
    redis_timeout_seconds: float = 1
    lease_seconds: float = 30
    ledger_down: str = "refuse"
    remote_import: str = "refuse"

    def limit_for(self, project_id: str) -> int:
        """Byte limit for a project; UNLIMITED (-1) means no limit."""
        return self.projects.get(project_id, self.default_bytes)


@dataclass(frozen=True)
class Config:
    gateway: Gateway
    keystone: Keystone
    admin_roles: frozenset[str]
    upstream_timeout_seconds: float
    client_idle_timeout_seconds: int  # mitmproxy's tcp_timeout: a silent connection is closed
    quota: Quota
    audit_path: str  # a file, or "-" for stdout
    identity: IdentityConf = IdentityConf()


class _Table:
    """One TOML table, read with the dotted key path kept for error messages."""

    def __init__(self, data: dict, path: str):
        if not isinstance(data, dict):
            raise ConfigError(f"[{path}] must be a table")
        self.data, self.path = data, path

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}"

    def get(self, key: str, kind: type | tuple[type, ...], default=...):
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self._key(key)} is required")
            return default
        value = self.data[key]
        # bool is an int in Python; never accept it where a number is meant.
        if isinstance(value, bool) and kind is not bool:
            raise ConfigError(f"{self._key(key)} must be {_kind_name(kind)}, not a boolean")
        if not isinstance(value, kind):
            raise ConfigError(f"{self._key(key)} must be {_kind_name(kind)}")
        return value

    def text(self, key: str, default=...) -> str:
        value = self.get(key, str, default)
        if not value:
            raise ConfigError(f"{self._key(key)} must not be empty")
        return value

    def url(self, key: str) -> str:
        value = self.text(key)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{self._key(key)} must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    def address(self, key: str) -> tuple[str, int]:
        value = self.text(key)
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{self._key(key)} must be host:port, got {value!r}")
        return host.strip("[]"), int(port)

    def positive(self, key: str, default=...) -> float:
        value = self.get(key, (int, float), default)
        if value <= 0:
            raise ConfigError(f"{self._key(key)} must be > 0")
        return value

    def table(self, key: str) -> _Table:
        return _Table(self.data.get(key, {}), self._key(key) if self.path else key)


def _kind_name(kind) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", list: "a list"}
    if isinstance(kind, tuple):
        return "a number"
    return names.get(kind, kind.__name__)


def _bytes(table: _Table, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < UNLIMITED:
        raise ConfigError(f"{table.path}.{key} must be a byte count >= 0, or -1 for unlimited")
    return value


def _count(table: _Table, key: str, value: int) -> int:
    if value < UNLIMITED:
        raise ConfigError(f"{table.path}.{key} must be a count >= 0, or -1 for unlimited")
    return value


def _whole(table: _Table, key: str, default: int) -> int:
    value = table.get(key, int, default)
    if value <= 0:
        raise ConfigError(f"{table.path}.{key} must be a whole number of seconds > 0")
    return value


def parse(data: dict) -> Config:
    root = _Table(data, "")
    known = {"gateway", "keystone", "identity", "policy", "quota", "audit"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]")

    gw = root.table("gateway")
    listen_host, listen_port = gw.address("listen")
    metrics_host, metrics_port = gw.address("metrics")
    gateway = Gateway(listen_host, listen_port, gw.url("upstream"), metrics_host, metrics_port)

    ks = root.table("keystone")
    keystone = Keystone(
        url=ks.url("url"),
        username=ks.text("username"),
        password=ks.text("password"),
        project=ks.text("project"),
        user_domain=ks.text("user_domain", "Default"),
        project_domain=ks.text("project_domain", "Default"),
        cache_seconds=int(ks.positive("cache_seconds", 300)),
        timeout_seconds=ks.positive("timeout_seconds", 5.0),
    )

    pol = root.table("policy")
    roles = pol.get("admin_roles", list, ["admin"])
    if not all(isinstance(r, str) and r for r in roles):
        raise ConfigError("policy.admin_roles must be a list of role names")

    q = root.table("quota")
    default_bytes = _bytes(q, "default_bytes", q.get("default_bytes", int))
    projects = q.table("projects")
    overrides = {pid: _bytes(projects, pid, v) for pid, v in projects.data.items()}
    quota = Quota(
        default_bytes, overrides,
        max_uploads=_count(q, "max_uploads", q.get("max_uploads", int, UNLIMITED)),
        keystone_limits=q.get("keystone_limits", bool, False),
        limits_cache_seconds=q.positive("limits_cache_seconds", 60),
        usage_cache_seconds=q.positive("usage_cache_seconds", 2),
        chunk_bytes=int(q.positive("chunk_bytes", 8 * 1024 * 1024)),
        ledger=_choice(q, "ledger", LEDGERS),
        redis_url=q.get("redis_url", str, ""),
        redis_timeout_seconds=q.positive("redis_timeout_seconds", 1),
        lease_seconds=q.positive("lease_seconds", 30),
        ledger_down=_choice(q, "ledger_down", LEDGER_DOWN),
        remote_import=_choice(q, "remote_import", REMOTE_IMPORT),
    )
    if quota.ledger == "redis" and not quota.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("quota.redis_url must be a redis:// URL when quota.ledger is \"redis\"")
    if quota.chunk_bytes < 1024 * 1024:
        raise ConfigError("quota.chunk_bytes must be >= 1048576")  # a step must outrun one socket read

    return Config(
        gateway=gateway,
        keystone=keystone,
        admin_roles=frozenset(roles),
        upstream_timeout_seconds=gw.positive("upstream_timeout_seconds", 30.0),
        client_idle_timeout_seconds=_whole(gw, "client_idle_timeout_seconds", 60),
        quota=quota,
        audit_path=root.table("audit").text("path", "-"),
        identity=_identity(root.table("identity")),
    )


def _choice(table: _Table, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
    """One of `choices`; the first is the default unless another is given."""
    value = table.text(key, choices[0] if default is None else default)
    if value not in choices:
        raise ConfigError(f"{table.path}.{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _identity(t: _Table) -> IdentityConf:
    d = IdentityConf()
    mode = _choice(t, "mode", IDENTITY_MODES, d.mode)
    algorithms = t.get("algorithms", list, list(d.algorithms))
    if not algorithms or not all(a in SIGNATURE_ALGORITHMS for a in algorithms):
        raise ConfigError(f"identity.algorithms must be a non-empty list of {', '.join(sorted(SIGNATURE_ALGORITHMS))}")
    leeway = t.get("leeway_seconds", (int, float), d.leeway_seconds)
    if not 0 <= leeway <= MAX_LEEWAY_SECONDS:
        raise ConfigError(f"identity.leeway_seconds must be between 0 and {MAX_LEEWAY_SECONDS}")
    conf = IdentityConf(
        mode=mode,
        trusted_auth=t.get("trusted_auth", bool, d.trusted_auth),
        algorithms=tuple(algorithms),
        leeway_seconds=leeway,
        jws_check=_choice(t, "jws_check", JWS_CHECKS, d.jws_check),
        jwks_cache_seconds=t.positive("jwks_cache_seconds", d.jwks_cache_seconds),
        jwks_refetch_cooldown_seconds=t.get("jwks_refetch_cooldown_seconds", (int, float),
                                            d.jwks_refetch_cooldown_seconds),
        issuer=t.get("issuer", str, d.issuer),
        audience=t.get("audience", str, d.audience),
        user_claim=t.text("user_claim", d.user_claim),
        project_claim=t.text("project_claim", d.project_claim),
        roles_claim=t.text("roles_claim", d.roles_claim),
    )
    if mode == "keystone-jws":
        conf = replace(conf, jws_public_keys=t.text("jws_public_keys"))
        if conf.trusted_auth and conf.jws_check == "offline":
            # Glance needs the caller's roles, and offline JWS tokens carry none.
            raise ConfigError('identity.trusted_auth needs roles: use jws_check = "confirm" with keystone-jws')
    if mode == "jwt":
        conf = replace(conf, jwks_url=t.url("jwks_url"), issuer=t.text("issuer"), audience=t.text("audience"))
        if not conf.trusted_auth:
            # Glance's authtoken cannot read the identity provider's tokens.
            raise ConfigError('identity.mode = "jwt" needs identity.trusted_auth = true')
    if conf.jwks_refetch_cooldown_seconds < 0:
        raise ConfigError("identity.jwks_refetch_cooldown_seconds must be >= 0")
    return conf


def load(path: str | Path) -> Config:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return parse(data)
