"""gunicorn entry point for Glance used by scripts/cloud.

Glance reads $OS_GLANCE_CONFIG_DIR/glance-api.conf (and the paste ini next to
it); trimming argv keeps any oslo.config user away from gunicorn's options.
"""
import sys

sys.argv = sys.argv[:1]

from glance.wsgi.api import application  # noqa: E402,F401
