"""Glance 33's own routing, as an oracle: run with the cloud's Glance venv python.

Builds the WSGI app Glance serves (paste pipeline: cors, http_proxy_to_wsgi,
version negotiation, osprofiler, the context middleware, the URLMaps, the v2
router with routes and WebOb) from Glance's own glance-api-paste.ini, and
gunicorn's request parser and environ builder (the cloud-in-a-box serves
Glance with gunicorn, with its defaults: it trusts 127.0.0.1, where the
gateway connects from). No server, no database: the v2 router's dispatch is
replaced by one that reports the controller and action routes matched.

The pipeline is the no-auth flavor: authtoken and its context middleware,
which the cloud runs instead of the unauthenticated one, route nothing; and
the unauthenticated one's RequestContext (a policy enforcer built per
request, 30 ms) is skipped too.

Reads a JSON list of base64 request heads per line on stdin (each exactly as
the gateway sends it), answers one JSON list per line on stdout, each item:
{"routed": true, "controller", "action", "image_id"} or {"routed": false,
"status": <Glance's or gunicorn's answer>}."""

import base64
import json
import os
import sys
import tempfile

CONF_TEMPLATE = """[DEFAULT]
enabled_backends = fs:file, fs2:file
enabled_import_methods = [glance-direct, copy-image]
image_cache_dir = {d}/cache
[paste_deploy]
config_file = {etc}/glance-api-paste.ini
[oslo_middleware]
enable_proxy_headers_parsing = true
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = {d}/images
[fs2]
filesystem_store_datadir = {d}/images2
"""


class Routed(Exception):
    pass


def dispatch(environ, start_response):
    """Stands in for glance.common.wsgi.Router._dispatch: what routes matched."""
    match = environ["wsgiorg.routing_args"][1]
    if not match:
        start_response("404 Not Found", [])
        return [b""]
    resource = match["controller"]
    raise Routed({"routed": True, "controller": type(resource.controller).__name__,
                  "action": match.get("action"), "image_id": match.get("image_id")})


def glance_app(workdir):
    from oslo_config import cfg

    import glance.common.wsgi_app  # registers the options Glance's WSGI app reads
    from glance.api.middleware import context
    from glance.common import config
    from glance.common import wsgi
    import glance_store

    wsgi.Router._dispatch = staticmethod(dispatch)
    context.UnauthenticatedContextMiddleware.process_request = lambda self, req: None
    etc = os.path.join(sys.prefix, "etc", "glance")
    conf = os.path.join(workdir, "glance-api.conf")
    with open(conf, "w") as f:
        f.write(CONF_TEMPLATE.format(d=workdir, etc=etc))
    config.set_config_defaults()
    cfg.CONF(["--config-file", conf], project="glance", prog="glance-api")
    glance_store.register_store_opts(cfg.CONF, reserved_stores=glance.common.wsgi_app.RESERVED_STORES)
    return config.load_paste_app("glance-api")


class Socket:
    def send(self, data):
        return len(data)

    sendall = send


def route(app, config, head):
    from gunicorn.http import wsgi
    from gunicorn.http.message import Request
    from gunicorn.http.unreader import IterUnreader

    peer = ("127.0.0.1", 40000)  # the gateway's address, which gunicorn trusts by default
    try:
        request = Request(config, IterUnreader([head]), peer, 1)
        _, environ = wsgi.create(request, Socket(), peer, ("127.0.0.1", 9292), config)
    except Exception as e:  # gunicorn answers 400 (or 500), the app never runs
        return {"routed": False, "status": f"gunicorn: {type(e).__name__}"}
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer.setdefault("status", status)

    try:
        for _ in app(environ, start_response):
            pass
    except Routed as e:
        return e.args[0]
    except Exception as e:  # Glance answers 500
        return {"routed": False, "status": f"error: {type(e).__name__}"}
    return {"routed": False, "status": answer.get("status", "")}


def main():
    with tempfile.TemporaryDirectory() as workdir:
        stdout = sys.stdout
        sys.stdout = sys.stderr  # whatever Glance prints stays out of the answers
        app = glance_app(workdir)
        from gunicorn.config import Config
        config = Config()  # gunicorn's defaults, as the cloud-in-a-box runs it
        stdout.write("ready\n")
        stdout.flush()
        for line in sys.stdin:
            heads = [base64.b64decode(h) for h in json.loads(line)]
            stdout.write(json.dumps([route(app, config, head) for head in heads]) + "\n")
            stdout.flush()


if __name__ == "__main__":
    main()
