"""gunicorn entry point for Keystone used by scripts/cloud.

Keystone hands sys.argv to oslo.config, which chokes on gunicorn's own
arguments (workers then exit at boot, forever).  Trim argv before the import
and point Keystone at our config directory through OS_KEYSTONE_CONFIG_DIR.
"""
import os
import sys

sys.argv = sys.argv[:1]
if not os.environ.get("OS_KEYSTONE_CONFIG_DIR"):
    raise RuntimeError("OS_KEYSTONE_CONFIG_DIR must point at the keystone.conf dir")

from keystone.wsgi.api import application  # noqa: E402,F401
