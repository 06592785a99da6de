"""The cloud-in-a-box as tests, the demo and the benchmarks see it: tokens,
Glance looked at directly, and glance-gate processes."""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families


REPO = Path(__file__).resolve().parents[2]
QUOTA_B = 4 * 1024 * 1024  # projB's quota behind the session's gateways (tests/stack/conftest.py)
STATE = Path(os.environ.get("GLANCE_GATE_STATE", REPO / ".state"))


# Glance's usage functions of its quota (glance/quota/keystone.py calls them), on its database.
GLANCE_USAGE = """
import json, sys
from oslo_config import cfg
from glance.db.sqlalchemy import api
cfg.CONF([], project="glance", default_config_files=[sys.argv[1]])
print(json.dumps({p: [api.user_get_storage_usage(None, p), api.user_get_staging_usage(None, p)]
                  for p in sys.argv[2:]}))
"""


def load_cloud() -> dict:
    path = STATE / "cloud.json"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `scripts/cloud up` first (scripts/test does)")
    return json.loads(path.read_text())


def load_identity_cloud() -> dict:
    """The extras of `CLOUD_IDENTITY=1 scripts/cloud up`: a JWS Keystone and two Glances."""
    path = STATE / "cloud-identity.json"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `CLOUD_IDENTITY=1 scripts/cloud up` (scripts/test does)")
    return json.loads(path.read_text())


def load_tls_cloud() -> dict:
    """The extras of `CLOUD_TLS=1 scripts/cloud up`: HTTPS Keystone and Glance, the test CA."""
    path = STATE / "cloud-tls.json"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `CLOUD_TLS=1 scripts/cloud up` (scripts/test does)")
    return json.loads(path.read_text())


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return json.dumps(value)  # a JSON string or number is a TOML one


class Stack:
    """The test's view of the cloud: tokens, and Glance as seen directly."""

    def __init__(self, cloud: dict):
        self.cloud = cloud
        self.keystone = cloud["keystone_url"].removesuffix("/v3")
        self.glance = cloud["glance_url"]
        # Idle connections dropped before gunicorn's 2 s keep-alive closes them: a
        # request sent on one as gunicorn closes it gets no answer.
        self.http = httpx.Client(timeout=60, limits=httpx.Limits(keepalive_expiry=1))
        self._tokens: dict[str, str] = {}

    def user(self, name: str) -> dict:
        return self.cloud["users"][name]

    def token(self, name: str) -> str:
        if name not in self._tokens:
            self._tokens[name] = self.new_token(name)
        return self._tokens[name]

    def new_token(self, name: str) -> str:
        u = self.user(name)
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": u["username"], "password": u["password"], "domain": {"name": "Default"}}}},
            "scope": {"project": {"name": u["project"], "domain": {"name": "Default"}}}}}
        r = self.http.post(f"{self.keystone}/v3/auth/tokens?nocatalog", json=body)
        assert r.status_code == 201, r.text
        return r.headers["X-Subject-Token"]

    def create_image(self, user: str = "userA", formats: bool = True, **props) -> str:
        body = {"name": f"test-{time.monotonic_ns()}", **props}
        if formats:
            body.update(disk_format="raw", container_format="bare")
        r = self.http.post(f"{self.glance}/v2/images", json=body,
                           headers={"X-Auth-Token": self.token(user)})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def image(self, image_id: str) -> dict:
        r = self.http.get(f"{self.glance}/v2/images/{image_id}",
                          headers={"X-Auth-Token": self.token("admin")})
        assert r.status_code == 200, r.text
        return r.json()

    def usage(self, project_id: str) -> int:
        """Bytes the project's images store, as Glance's image_size_total counts them."""
        return self.glance_usage(project_id)[project_id][0]

    def glance_usage(self, *projects: str) -> dict[str, tuple[int, int]]:
        """Glance's own count, exact to the byte, for each project: (image_size_total,
        image_stage_total) as its quota code computes them from its database
        (GET /v2/info/usage rounds to MiB). Run in the cloud's Glance venv."""
        conf = Path(self.cloud["glance_config_dir"]) / "glance-api.conf"
        run = subprocess.run([str(Path(self.cloud["venvs"]["glance"]) / "bin" / "python"), "-W", "ignore", "-c", GLANCE_USAGE, str(conf),
                              *projects], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return {p: tuple(v) for p, v in json.loads(run.stdout).items()}

    def info_usage(self, user: str) -> dict:
        """GET /v2/info/usage for the user's project, from the cloud's Glance with
        Keystone limits: {resource: {usage (MiB for sizes), limit}}."""
        r = self.http.get(f"{self.cloud['glance_limits_url']}/v2/info/usage", headers={"X-Auth-Token": self.token(user)})
        assert r.status_code == 200, r.text
        return r.json()["usage"]

    def delete_image(self, image_id: str, user: str = "userA") -> None:
        r = self.http.delete(f"{self.glance}/v2/images/{image_id}",
                             headers={"X-Auth-Token": self.token(user)})
        assert r.status_code == 204, r.text

    def body_deleting_image_midway(self, image_id: str, part: int = 1024 * 1024):
        """An upload body that, once Glance is storing it (`saving`), has the
        image deleted before it sends its second part: Glance then answers 410."""
        yield os.urandom(part)
        done = threading.Event()

        def delete() -> None:
            deadline = time.monotonic() + 30
            while self.image(image_id)["status"] != "saving" and time.monotonic() < deadline:
                time.sleep(0.05)
            self.delete_image(image_id)
            done.set()

        threading.Thread(target=delete, daemon=True).start()
        assert done.wait(35), "the image never reached `saving`"
        yield os.urandom(part)

    def openrc(self, name: str) -> dict[str, str]:
        """The OS_* environment of the openstack CLI for one of the seeded users."""
        u = self.user(name)
        return {"OS_AUTH_URL": self.cloud["keystone_url"], "OS_IDENTITY_API_VERSION": "3",
                "OS_USERNAME": u["username"], "OS_PASSWORD": u["password"],
                "OS_PROJECT_NAME": u["project"], "OS_USER_DOMAIN_NAME": "Default",
                "OS_PROJECT_DOMAIN_NAME": "Default", "OS_INTERFACE": "public"}

    def glance_took_up(self, image_id: str, uploads: int, log: Path | None = None) -> None:
        """Until Glance has answered `uploads` PUTs of the image's data. A cut upload
        may still sit in Glance's socket buffers, not yet begun, when the client
        gets its 413: until Glance takes it up and hits the dropped connection, a
        retry would find the image `saving`."""
        log, deadline = log or self.cloud["logs"]["glance"], time.monotonic() + 30
        pattern = f'"PUT /v2/images/{image_id}/'
        while time.monotonic() < deadline:
            with open(log, errors="replace") as f:
                if sum(pattern in line for line in f) >= uploads:
                    return
            time.sleep(0.1)
        raise AssertionError(f"Glance never answered {uploads} upload(s) of {image_id}")

    def assert_untouched(self, image_id: str, cut: bool = False) -> None:
        """The refused upload left no trace at Glance: still queued, no data.
        cut: the upload was cut mid-stream, so Glance had begun (`saving`) and
        learns of the dropped connection on its own time: wait up to 10 s."""
        deadline = time.monotonic() + (10 if cut else 0)
        while (image := self.image(image_id))["status"] == "saving" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (image["status"], image["size"]) == ("queued", None), image


def wait_until(check, what: str, timeout: float = 30):
    """check()'s first truthy value, polled; fails naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.1)
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, log: Path | None = None,
              timeout: float = 30) -> None:
    """Until something listens on the loopback port; fails early if proc exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{log.read_text() if log else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s:\n{log.read_text() if log else ''}")


def tls_files(tls: dict, name: str) -> tuple[Path, Path]:
    """A certificate of the cloud's test CA (CLOUD_TLS=1), and its key."""
    return Path(tls["tls_dir"]) / f"{name}.pem", Path(tls["tls_dir"]) / f"{name}.key"


def tls_settings(tls: dict, cert: str = "server", upstream_ca: bool = True) -> dict:
    """[gateway] keys for an HTTPS listener serving `cert`, trusting the test CA upstream."""
    pem, key = tls_files(tls, cert)
    return {"tls_cert_file": str(pem), "tls_key_file": str(key),
            **({"upstream_ca_file": tls["ca_file"]} if upstream_ca else {})}


def write_config(path: Path, stack: Stack, *, port: int, metrics_port: int, upstream: str | None = None,
                 keystone: str | None = None, quota: dict[str, int] | None = None,
                 cache_seconds: int = 300, identity: dict | None = None,
                 quota_settings: dict | None = None, client_idle_timeout: int | None = None,
                 default_bytes: int = -1, service_user: dict | None = None,
                 gateway_settings: dict | None = None, keystone_settings: dict | None = None) -> Path:
    """quota: per-project byte limits, default_bytes everyone else's;
    quota_settings: any other [quota] key; identity: the [identity] table;
    service_user: the gateway's own Keystone user; gateway_settings,
    keystone_settings: more keys of those tables, a value None drops the key
    (e.g. the password)."""
    gw = service_user or stack.user("gateway")
    quota = quota or {}
    account = {"username": gw["username"], "password": gw["password"], "project": gw["project"],
               **(keystone_settings or {})}
    lines = [
        "[gateway]",
        f'listen = "127.0.0.1:{port}"',
        f'upstream = "{upstream or stack.glance}"',
        f'metrics = "127.0.0.1:{metrics_port}"',
        "upstream_timeout_seconds = 10",
        *([f"client_idle_timeout_seconds = {client_idle_timeout}"] if client_idle_timeout else []),
        *(f"{key} = {toml_value(value)}" for key, value in (gateway_settings or {}).items()),
        "[keystone]",
        f'url = "{keystone or stack.keystone}"',
        *(f"{key} = {toml_value(value)}" for key, value in account.items() if value is not None),
        "timeout_seconds = 3",
        f"cache_seconds = {cache_seconds}",
        "[identity]",
        *(f"{key} = {toml_value(value)}" for key, value in (identity or {}).items()),
        "[policy]",
        'admin_roles = ["admin"]',
        "[audit]",
        f'path = "{path.with_suffix(".audit.jsonl")}"',
        "[quota]",
        f"default_bytes = {default_bytes}",
        *(f"{key} = {toml_value(value)}" for key, value in (quota_settings or {}).items()),
        "[quota.projects]",
        *(f'"{pid}" = {limit}' for pid, limit in quota.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


class Gateway:
    """A glance-gate process; `with start_gateway(...) as gw:` stops it at the end."""

    def __init__(self, url: str, proc: subprocess.Popen, log: Path, config: Path, metrics_port: int):
        self.url, self.proc, self.log, self.config = url, proc, log, config
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc) -> None:
        stop(self.proc)  # a no-op on a process already reaped (one a test killed)

    def probed(self) -> bool:
        try:
            return "glance_gate_dependency_up{" in httpx.get(self.metrics_url, timeout=10).text
        except httpx.TransportError:
            return False

    def log_text(self) -> str:
        return self.log.read_text()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples with these labels, as scraped now."""
        text = httpx.get(self.metrics_url, timeout=10).text
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples
                   if sample.name == name and labels.items() <= sample.labels.items())

    def worker_pids(self) -> list[int]:
        """The supervisor's worker processes now."""
        try:
            return [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        except FileNotFoundError:
            return []

    def audit(self) -> list[dict]:
        """The audit trail's records so far."""
        path = self.config.with_suffix(".audit.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start_gateway(tmp: Path, stack: Stack, *, port: int | None = None, mitmdump: bool = False,
                  fault: str = "", max_fds: int | None = None, **config) -> Gateway:
    """fault: a step of the decision made to raise (tests/fault_injection.py); runs mitmdump.
    max_fds: the gateway's limit of open files (RLIMIT_NOFILE)."""
    port, metrics_port = port or free_port(), free_port()
    conf = write_config(tmp / f"gateway-{port}.toml", stack, port=port, metrics_port=metrics_port, **config)
    log = tmp / f"gateway-{port}.log"
    bindir = Path(sys.executable).parent
    env = {**os.environ, "GLANCE_GATE_CONFDIR": str(tmp / "confdir"), "GLANCE_GATE_FAULT": fault}
    if mitmdump or fault:
        upstream = config.get("upstream") or stack.glance
        scripts = [REPO / "tests" / "support" / "fault_injection.py"] * bool(fault) + [REPO / "addons" / "script.py"]
        cmd = [str(bindir / "mitmdump"), "--mode", f"reverse:{upstream}@127.0.0.1:{port}",
               "--set", f"confdir={tmp / 'confdir'}", "-q",
               *(arg for script in scripts for arg in ("-s", str(script))),
               "--set", f"glance_gate_config={conf}"]
    else:
        cmd = [str(bindir / "glance-gate"), "--config", str(conf)]
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (max_fds, max_fds))) if max_fds else None
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=REPO,
                            preexec_fn=limit)
    scheme = "https" if "tls_cert_file" in (config.get("gateway_settings") or {}) else "http"
    gw = Gateway(f"{scheme}://127.0.0.1:{port}", proc, log, conf, metrics_port)
    try:
        wait_port(port, proc, log)
        # Running, past mitmproxy's startup check (which exits on any error logged
        # before it): the dependency probe has reported once.
        wait_until(gw.probed, "the gateway never probed its dependencies")
        if not (mitmdump or fault):  # the supervisor listens at once; its workers take a second
            wait_serving(gw, (config.get("gateway_settings") or {}).get("workers", 1))
    except BaseException:
        stop(proc)  # never left running when it did not start
        raise
    return gw


def wait_serving(gw: Gateway, workers: int, timeout: float = 60) -> None:
    """Until `workers` workers of the supervisor listen."""
    deadline = time.monotonic() + timeout
    while True:
        if gw.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {gw.proc.returncode}:\n{gw.log_text()}")
        try:
            if gw.metric("glance_gate_workers") == workers:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers not serving after {timeout} s:\n{gw.log_text()}")
        time.sleep(0.1)


@contextmanager
def all_running(gateways: Iterable[Gateway]) -> Iterator[list[Gateway]]:
    """Gateways started one after the other (a generator of start_gateway
    calls), every one started stopped at the end, even if a later one fails to start."""
    with ExitStack() as running:
        yield [running.enter_context(gw) for gw in gateways]


def at_once(gateways: list[Gateway], work: Callable, indices: Iterable[int]) -> list:
    """work(gateway, i) for every i, all at once, the i dealt round-robin over the gateways."""
    indices = list(indices)
    with ThreadPoolExecutor(len(indices)) as pool:
        return list(pool.map(lambda i: work(gateways[i % len(gateways)], i), indices))


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def curl() -> str:
    path = shutil.which("curl")
    assert path, "curl is required"
    return path


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def put_head(image_id: str, token: str, length: int, expect: bool) -> bytes:
    lines = [f"PUT /v2/images/{image_id}/file HTTP/1.1", "Host: glance",
             f"X-Auth-Token: {token}", "Content-Type: application/octet-stream",
             f"Content-Length: {length}"]
    if expect:
        lines.append("Expect: 100-continue")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_head(sock: socket.socket) -> bytes:
    """One response's head (and whatever followed it in the same reads), however it is split."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    return data
