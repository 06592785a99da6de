"""Reads and validates config.toml. Every error names the key at fault."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
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
    quota: Quota
    audit_path: str  # a file, or "-" for stdout


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


def _choice(table: _Table, key: str, choices: tuple[str, ...]) -> str:
    value = table.get(key, str, choices[0])
    if value not in choices:
        raise ConfigError(f"{table.path}.{key} must be one of {', '.join(choices)}")
    return value


def parse(data: dict) -> Config:
    root = _Table(data, "")
    known = {"gateway", "keystone", "policy", "quota", "audit"}
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
        quota=quota,
        audit_path=root.table("audit").text("path", "-"),
    )


def load(path: str | Path) -> Config:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return parse(data)
