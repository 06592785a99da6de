"""A request as Glance 33's router reads it (the oracle, glance_oracle.py in the
cloud's Glance venv) and as the gateway reads it (mitmproxy's parser,
ForwardedHeaders, glance_gate.read_route); the seed requests of routing_corpus.txt."""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mitmproxy.net.http import http1
from mitmproxy.test import tflow

from addons.forwarded import ForwardedHeaders
from addons.glance_gate import read_route
from policy.routes import Route

ID = "0cb9328d-dd8c-41bb-b378-404b854b93b9"
SUPPORT = Path(__file__).parent


@dataclass(frozen=True)
class Variant:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()

    def head(self) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1", "Host: glance.example"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def __str__(self) -> str:
        return " | ".join([f"{self.method} {self.target}"] + [f"{n}: {v}" for n, v in self.headers])


def corpus() -> list[Variant]:
    variants = []
    for line in (SUPPORT / "routing_corpus.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            request, *headers = (part.strip() for part in line.replace("{id}", ID).split(" | "))
            method, target = request.split(" ", 1)
            variants.append(Variant(method, target, tuple(tuple(h.split(": ", 1)) for h in headers)))
    return variants


class Oracle:
    def __init__(self, python: Path):
        self.proc = subprocess.Popen([str(python), str(SUPPORT / "glance_oracle.py")], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout and self.proc.stdout.readline() == "ready\n", "the oracle did not start"

    def route(self, heads: list[bytes]) -> list[dict]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps([base64.b64encode(h).decode() for h in heads]) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def through_gateway(variant: Variant) -> tuple[Route, bytes] | None:
    """The gateway's route for the request, and the head it forwards; None
    where mitmproxy refuses the request itself."""
    try:
        request = http1.read_request_head(variant.head().split(b"\r\n")[:-2])
    except ValueError:
        return None
    flow = tflow.tflow(req=request)
    ForwardedHeaders().rewrite(flow)
    return read_route(flow.request), http1.assemble_request_head(flow.request) + b"\r\n\r\n"
