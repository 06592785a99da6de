"""TLS on both sides of the gateway, through mitmproxy's own options.

- Listener: with `gateway.tls_cert_file`, mitmproxy's `certs` serves that
  certificate for every name ("*"); without it, a TLS handshake is failed
  rather than answered with mitmproxy's own CA. ALPN: with http2 off,
  mitmproxy selects HTTP/1 only, so an `h2` offer is never accepted.
- Glance: verified always (`ssl_insecure` forced off), against
  `gateway.upstream_ca_file` or the system store (mitmproxy's default would
  be certifi's bundle); optionally with a client certificate.
- TLS 1.2 at least, both ways.

mitmproxy wants a certificate and its key in one PEM file, so the two files
are joined into the confdir (mode 0600). The name carries a hash of the
content: mitmproxy caches TLS contexts by file name, and a new name is what
makes it load a renewed certificate."""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from mitmproxy import ctx, tls

from addons import wire
from policy.config import Config
from policy.exceptions import ConfigError


MIN_VERSION = "TLS1_2"


def joined_pem(confdir: str, name: str, cert_file: str, key_file: str) -> str | None:
    """cert_file's chain and key_file's key in one file of confdir, or None."""
    if not cert_file:
        return None
    blob = Path(key_file).read_bytes().rstrip(b"\n") + b"\n" + Path(cert_file).read_bytes()
    directory = Path(confdir).expanduser()
    path = directory / f"{name}-{hashlib.sha256(blob).hexdigest()[:16]}.pem"
    if not path.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        partial.replace(path)
    return str(path)


def prune(confdir: str) -> None:
    """Removes the joined files mitmproxy no longer uses (after an update)."""
    used = {spec.split("=", 1)[-1] for spec in ctx.options.certs} | {ctx.options.client_certs}
    for name in ("listener", "upstream-client"):
        for path in Path(confdir).expanduser().glob(f"{name}-*.pem"):
            if str(path) not in used:
                path.unlink(missing_ok=True)


def options(config: Config, confdir: str) -> dict:
    """The mitmproxy options that make its TLS what config.toml says."""
    gw = config.gateway
    system = ssl.get_default_verify_paths()
    if gw.upstream.startswith("https:") and not (gw.upstream_ca_file or system.cafile or system.capath):
        raise ConfigError("gateway.upstream_ca_file: required, this system has no CA store")
    listener = joined_pem(confdir, "listener", gw.tls_cert_file, gw.tls_key_file)
    return {
        "ssl_insecure": False,
        "ssl_verify_upstream_trusted_ca": gw.upstream_ca_file or system.cafile,
        "ssl_verify_upstream_trusted_confdir": None if gw.upstream_ca_file else system.capath,
        "client_certs": joined_pem(confdir, "upstream-client", gw.upstream_client_cert_file,
                                   gw.upstream_client_key_file),
        "certs": [f"*={listener}"] if listener else [],
        "upstream_cert": False,  # never mimic Glance's certificate
        "add_upstream_certs_to_client_chain": False,
        "tls_version_client_min": MIN_VERSION,
        "tls_version_server_min": MIN_VERSION,
    }


class ListenerTls:
    """Fails client TLS the operator did not configure. A renewed certificate
    comes with a SIGHUP's rolling restart of the workers (process/supervisor.py)."""

    def __init__(self, config: Callable[[], Config | None]) -> None:
        self.config = config

    @property
    def serving(self) -> bool:
        return bool((config := self.config()) and config.gateway.tls_cert_file)

    def tls_start_client(self, data: tls.TlsData) -> None:
        # Runs after mitmproxy's TlsConfig, which has built a connection with a
        # certificate from mitmproxy's own CA: without ours, no TLS at all.
        if not self.serving:
            data.ssl_conn = None
            wire.reset(data.conn)
