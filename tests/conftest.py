"""Fixtures for end-to-end tests against the cloud-in-a-box (scripts/cloud up):
real Keystone, real Glance, and glance-gate processes started per session."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import settings

from tests.support.stack import (REPO, Gateway, Stack, curl, free_port, load_cloud, load_identity_cloud,  # noqa: F401
                         load_tls_cloud, start_gateway, stop, tls_settings)

QUOTA_B = 4 * 1024 * 1024  # projB's quota in these tests

# CI replays the same examples on every run: derandomized, with no example
# database. Local runs stay random, so they keep finding new cases (and keep
# what they found in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default"))

CLOUD_FIXTURES = {"cloud", "ident", "tls"}


def pytest_collection_modifyitems(items) -> None:
    """Every test that needs the cloud-in-a-box, directly or through another
    fixture, is marked `stack`: `scripts/test --offline` runs the others."""
    for item in items:
        if CLOUD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


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
    gw = start_gateway(tmp_path_factory.mktemp("gw"), stack, port=port,
                       quota={stack.user("userB")["project_id"]: QUOTA_B})
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="session")
def tls_gateway(stack, tls, tmp_path_factory) -> Gateway:
    """HTTPS on every hop, at the HTTPS image endpoint of the catalog's
    RegionTLS; projB has the same small quota as behind `gateway`."""
    gw = start_gateway(tmp_path_factory.mktemp("gw-tls"), stack, port=urlsplit(tls["gateway_tls_url"]).port,
                       upstream=tls["glance_tls_url"], keystone=tls["keystone_tls_url"],
                       quota={stack.user("userB")["project_id"]: QUOTA_B},
                       gateway_settings=tls_settings(tls), keystone_settings={"ca_file": tls["ca_file"]})
    yield gw
    stop(gw.proc)


@pytest.fixture
def gw_http(gateway) -> httpx.Client:
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def openstack_cli(cloud) -> str:
    path = Path(cloud["venvs"]["client"]) / "bin" / "openstack"
    assert path.exists(), path
    return str(path)


