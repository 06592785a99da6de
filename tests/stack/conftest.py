"""Fixtures of the end-to-end tests, against the cloud-in-a-box (scripts/cloud
up): real Keystone, real Glance, glance-gate processes started per session,
and the quota tests' projQ and Redis."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.glance_server import Glance
from tests.support.quota import glance_usage
from tests.support.redis_server import RedisServer
from tests.support.stack import (QUOTA_B, Gateway, Stack, load_cloud, load_identity_cloud, load_tls_cloud,
                                 start_gateway, tls_settings)


def _loaded(load) -> dict:
    try:
        return load()
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def cloud() -> dict:
    return _loaded(load_cloud)


@pytest.fixture(scope="session")
def ident() -> dict:
    """The identity extras of the cloud (CLOUD_IDENTITY=1): JWS Keystone, trusted Glance."""
    return _loaded(load_identity_cloud)


@pytest.fixture(scope="session")
def tls() -> dict:
    """The TLS extras of the cloud (CLOUD_TLS=1): HTTPS Keystone and Glance, the test CA."""
    return _loaded(load_tls_cloud)


@pytest.fixture(scope="session")
def stack(cloud) -> Stack:
    return Stack(cloud)


@pytest.fixture(scope="session")
def gateway(stack, tmp_path_factory) -> Gateway:
    """The gateway under test, at the image endpoint of the Keystone catalog.
    projB has a small quota, everyone else none."""
    port = urlsplit(stack.cloud["gateway_url"]).port
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        pytest.fail(f"port {port} is taken: stop the demo gateway (scripts/demo stop) first")
    except OSError:
        pass
    with start_gateway(tmp_path_factory.mktemp("gw"), stack, port=port,
                       quota={stack.user("userB")["project_id"]: QUOTA_B}) as gw:
        yield gw


@pytest.fixture(scope="session")
def tls_gateway(stack, tls, tmp_path_factory) -> Gateway:
    """HTTPS on every hop, at the HTTPS image endpoint of the catalog's
    RegionTLS; projB has the same small quota as behind `gateway`."""
    with start_gateway(tmp_path_factory.mktemp("gw-tls"), stack, port=urlsplit(tls["gateway_tls_url"]).port,
                       upstream=tls["glance_tls_url"], keystone=tls["keystone_tls_url"],
                       quota={stack.user("userB")["project_id"]: QUOTA_B},
                       gateway_settings=tls_settings(tls), keystone_settings={"ca_file": tls["ca_file"]}) as gw:
        yield gw


@pytest.fixture
def gw_http(gateway) -> httpx.Client:
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def openstack_cli(cloud) -> str:
    path = Path(cloud["venvs"]["client"]) / "bin" / "openstack"
    assert path.exists(), path
    return str(path)


@pytest.fixture
def projQ(stack: Stack) -> str:
    """projQ's id, with every image of it deleted, hidden ones too: its usage is 0."""
    token = stack.token("admin")
    project = stack.user("userQ")["project_id"]
    for hidden in ("false", "true"):
        r = stack.http.get(f"{stack.glance}/v2/images", headers={"X-Auth-Token": token},
                           params={"owner": project, "os_hidden": hidden, "limit": 1000})
        for image in r.json()["images"]:
            stack.delete_image(image["id"], user="admin")
    assert glance_usage(stack, project) == 0
    return project


@pytest.fixture(scope="module")
def redis_module(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_module):
    """Empty: projQ's images were deleted behind the gateways' backs, so the
    usage a previous test left in the ledger is stale, as each test's new
    memory ledger is not."""
    redis_module.cli("FLUSHALL")
    return redis_module


@pytest.fixture
def own_glance(stack, tmp_path):
    """A Glance of the test's own, to kill and start again (tests/support/glance_server.py)."""
    with Glance(stack, tmp_path / "glance.log") as glance:
        yield glance
