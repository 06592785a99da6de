"""What every test shares: hypothesis's profile, the `stack` marker, and Redis
Sentinel. The cloud's fixtures are in tests/stack/conftest.py."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from tests.support.redis_server import SentinelGroup

# CI replays the same examples on every run: derandomized, with no example
# database. Local runs stay random, so they keep finding new cases (and keep
# what they found in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default"))

CLOUD_FIXTURES = {"cloud", "ident", "tls"}  # tests/stack/conftest.py; every other cloud fixture asks for one


def pytest_collection_modifyitems(items) -> None:
    """Every test that needs the cloud-in-a-box, directly or through another
    fixture, is marked `stack`: `scripts/test --offline` runs the others."""
    for item in items:
        if CLOUD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


@pytest.fixture
def sentinels(tmp_path):
    """A primary, two replicas and three sentinels on loopback."""
    group = SentinelGroup(tmp_path / "sentinel").start()
    yield group
    group.stop()
