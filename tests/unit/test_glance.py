"""What an image stores, as Glance 33 counts it for image_size_total (policy/glance.py)."""

from __future__ import annotations

import pytest

from policy.glance import stored as glance_stored


@pytest.mark.parametrize("image, stored", [
    ({"status": "active", "size": 10, "stores": "fs"}, 10),
    ({"status": "active", "size": 10, "stores": "fs,fs2"}, 20),
    ({"status": "active", "size": 10, "stores": "fs", "os_glance_importing_to_stores": "fs2"}, 20),
    ({"status": "active", "size": 10, "locations": [{}, {}, {}]}, 30),
    ({"status": "active", "size": 10}, 10),  # single-store Glance: one location
    ({"status": "deactivated", "size": 10}, 10),  # Glance counts a deactivated image's locations
    ({"status": "deactivated", "size": 10, "stores": "fs,fs2"}, 20),
    ({"status": "uploading", "size": 10, "stores": ""}, 0),  # staged data is not stored yet
    ({"status": "queued", "size": None}, 0),
])
def test_stored_bytes_as_glance_counts_them(image, stored):
    assert glance_stored(image) == stored
