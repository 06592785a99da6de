"""gunicorn entry point for Glance used by scripts/cloud.

Glance reads $OS_GLANCE_CONFIG_DIR/glance-api.conf (and the paste ini next to
it); trimming argv keeps any oslo.config user away from gunicorn's options.
"""
import sys

from sqlalchemy import event
from sqlalchemy.engine import Engine

sys.argv = sys.argv[:1]


@event.listens_for(Engine, "before_cursor_execute", retval=True)
def _begin_immediate(conn, cursor, statement, parameters, context, executemany):
    """oslo.db opens sqlite transactions with a deferred BEGIN: two requests
    that read, then write, fail at once with "database is locked" (seen when an
    aborted upload restores its image while another request writes), where a
    real cloud's MySQL would make one wait. BEGIN IMMEDIATE makes sqlite queue
    them behind its busy timeout instead."""
    if statement == "BEGIN" and conn.dialect.name == "sqlite":
        statement = "BEGIN IMMEDIATE"
    return statement, parameters


from glance.wsgi.api import application  # noqa: E402,F401
