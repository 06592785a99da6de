"""Flows as mitmproxy has them at a hook, the addons built by the composition
root, and what a client would see: for the addon unit tests, on mitmproxy's
own test helpers (taddons, tflow), with no cloud."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mitmproxy import http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons, tflow
from prometheus_client import REGISTRY

from addons import wire
from addons.audit import AuditTrail
from addons.compose import compose
from addons.glance_gate import GlanceGate
from policy.config import Config
from policy.decision import Identity, Image
from tests.support.fakes import config, upload_gate
from tests.support.stack import free_port

IMAGE_ID = "0cb9328d-dd8c-41bb-b378-404b854b93b1"
CALLER = Identity("userA", "projA", frozenset({"member"}), 10**10)
QUEUED = Image(IMAGE_ID, "projA", "queued", "raw", "bare")
UNLIMITED = -1


def upload(headers: dict[str, str], path: str = f"/v2/images/{IMAGE_ID}/file") -> http.HTTPFlow:
    """A flow as mitmproxy has it at `requestheaders`: the head read, no body yet."""
    request = http.Request.make("PUT", f"http://glance{path}")
    request.headers.clear()
    request.headers.update({"host": "glance", **headers})
    request.data.content = None
    return tflow.tflow(req=request)


def upload_headers(length: int | None = 1024, **extra: str) -> dict[str, str]:
    framing = {"content-length": str(length)} if length is not None else {"transfer-encoding": "chunked"}
    return {"x-auth-token": "tok", "content-type": "application/octet-stream", **framing, **extra}


def new_gate() -> GlanceGate:
    """The gate as the composition root builds it, with its ending service."""
    addons, _ = compose()
    return addons[-1]


def glance_gate(tmp_path: Path, limit: int = UNLIMITED, image: Image | None = QUEUED, usage: int = 0,
                outcome: Identity | Exception = CALLER, trusted_auth: bool = False, **gateway) -> GlanceGate:
    """The addon as `configure` leaves it, with the fixed-answer gate (tests/fakes.py);
    `gateway`: settings of config.toml's [gateway]."""
    gg = new_gate()
    gg.config = settings(config(limit, audit=str(tmp_path / "audit.jsonl"), chunk_bytes=1024 * 1024),
                         trusted_auth, **gateway)
    gg.gate = upload_gate(gg.config, outcome, image, usage)
    gg.ending.audit = AuditTrail(gg.config.audit.path)
    return gg


def settings(conf: Config, trusted_auth: bool = False, **gateway) -> Config:
    """conf with [identity] trusted_auth and [gateway] settings changed."""
    return conf.model_copy(update={"gateway": conf.gateway.model_copy(update=gateway),
                                   "identity": conf.identity.model_copy(update={"trusted_auth": trusted_auth})})


def audit(tmp_path: Path) -> list[dict]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def counted(code: int, reason: str, method: str = "PUT", route: str = "upload") -> float:
    labels = {"method": method, "route": route, "code": str(code), "reason": reason, "source": "gateway"}
    return REGISTRY.get_sample_value("glance_gate_requests_total", labels) or 0.0


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def run(coro):
    """Runs a hook inside a proxyserver context, as wire.py expects to find one."""
    async def inside():
        with taddons.context(Proxyserver()):
            return await coro()
    return asyncio.run(inside())


class Answers:
    """What the gateway wrote to clients itself (wire._answer, the one way it
    answers), as (status, headers, JSON body)."""

    def __init__(self, monkeypatch):
        self.sent: list[tuple[int, dict[str, str], dict]] = []
        monkeypatch.setattr(wire, "_answer", lambda flow, status, headers, body:
                            self.sent.append((status, headers, json.loads(body))))


def write_config(path: Path, upstream: str = "http://127.0.0.1:2", gateway: str = "") -> Path:
    """A whole config.toml at `path` whose dependencies are never called; its
    metrics port free, as configure serves it; its audit file beside it."""
    path.write_text(f"""
[gateway]
listen = "127.0.0.1:1"
upstream = "{upstream}"
metrics = "127.0.0.1:{free_port()}"
{gateway}
[keystone]
url = "http://127.0.0.1:3"
username = "u"
password = "p"
project = "p"
[audit]
path = "{path.parent / 'audit.jsonl'}"
[quota]
default_bytes = -1
""")
    return path
