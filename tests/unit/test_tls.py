"""addons/tls.py: config.toml's TLS as mitmproxy's options, the certificate
and key joined where mitmproxy reads them, and no TLS the operator did not
configure."""

from __future__ import annotations

import os

import trustme
from mitmproxy import tls as mitm_tls
from mitmproxy.test import tflow

from addons import tls, wire
from addons.tls import ListenerTls
from tests.support.fakes import config
from tests.support.addon_flows import settings


def listener(tmp_path, name: str = "gateway.example"):
    ca = trustme.CA()
    cert = ca.issue_cert(name)
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    return str(cert_file), str(key_file)


def test_options_verify_glance_and_want_tls_1_2_both_ways(tmp_path):
    options = tls.options(config(-1), str(tmp_path))
    assert options["ssl_insecure"] is False and options["upstream_cert"] is False
    assert options["tls_version_client_min"] == options["tls_version_server_min"] == "TLS1_2"
    assert options["certs"] == [] and options["client_certs"] is None, "no listener certificate configured"


def test_the_listener_serves_its_certificate_for_every_name_from_a_private_joined_file(tmp_path):
    cert_file, key_file = listener(tmp_path)
    conf = settings(config(-1), tls_cert_file=cert_file, tls_key_file=key_file)
    [spec] = tls.options(conf, str(tmp_path / "confdir"))["certs"]
    name, path = spec.split("=", 1)
    assert name == "*"
    joined = open(path, "rb").read()
    assert b"PRIVATE KEY" in joined and b"CERTIFICATE" in joined
    assert oct((tmp_path / "confdir").stat().st_mode & 0o777) == "0o700"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    (tmp_path / "renewed").mkdir()
    renewed_cert, renewed_key = listener(tmp_path / "renewed")
    renewed = tls.options(settings(config(-1), tls_cert_file=renewed_cert, tls_key_file=renewed_key),
                          str(tmp_path / "confdir"))["certs"]
    assert renewed != [spec], "a renewed certificate gets a new name, which mitmproxy loads"


def test_without_a_listener_certificate_a_tls_handshake_is_dropped(monkeypatch):
    reset = []
    monkeypatch.setattr(wire, "reset", reset.append)
    conf = config(-1)
    data = mitm_tls.TlsData(tflow.tclient_conn(), context=None, ssl_conn=object())
    ListenerTls(lambda: conf).tls_start_client(data)
    assert data.ssl_conn is None and reset == [data.conn], "never mitmproxy's own CA"


def test_with_a_listener_certificate_mitmproxys_tls_stays(tmp_path, monkeypatch):
    reset = []
    monkeypatch.setattr(wire, "reset", reset.append)
    cert_file, key_file = listener(tmp_path)
    conf = settings(config(-1), tls_cert_file=cert_file, tls_key_file=key_file)
    conn = object()
    data = mitm_tls.TlsData(tflow.tclient_conn(), context=None, ssl_conn=conn)
    ListenerTls(lambda: conf).tls_start_client(data)
    assert data.ssl_conn is conn and reset == []
