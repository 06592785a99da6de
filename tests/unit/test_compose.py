"""The composition root (addons/compose.py): the addons in the order mitmproxy
runs them, one ending service shared by every addon that ends a request, the
config each reads being the one the gate loaded (also after a reload), and
mitmproxy's patches installed once, whoever composes."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from mitmproxy import hooks, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.addons.tlsconfig import TlsConfig
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.test import taddons

from addons.client_bounds import ClientBounds
from addons.compose import compose, install_patches
from addons.ending import Ending
from addons.glance_gate import GlanceGate
from addons.metrics import Metrics
from addons.trusted_auth import StripIdentity
from tests.support.addon_flows import write_config


def composed() -> tuple[StripIdentity, ClientBounds, GlanceGate, Ending]:
    (strip, bounds, gate), ending = compose(Metrics(serve=False, probe=False))
    return strip, bounds, gate, ending


def test_the_addons_in_mitmproxys_order_share_one_ending_service():
    addons, ending = compose(Metrics(serve=False, probe=False))
    assert [type(addon) for addon in addons] == [StripIdentity, ClientBounds, GlanceGate]
    strip, bounds, gate = addons
    assert strip.ending is ending and bounds.ending is ending
    assert gate.ending is ending and gate.trusted.ending is ending
    _, _, other_gate, other_ending = composed()
    assert other_ending is not ending and other_gate.ending is other_ending, "two compositions share nothing"


def test_every_addon_reads_the_config_the_gate_loaded_also_after_a_reload(tmp_path):
    strip, bounds, gate, ending = composed()
    readers = [ending.config, strip.config, bounds.config, gate.listener_tls.config]
    assert [read() for read in readers] == [None] * 4, "nothing loaded yet"
    first = write_config(tmp_path / "first.toml", gateway="max_connections_per_client = 7")
    second = write_config(tmp_path / "second.toml", gateway="max_connections_per_client = 9")

    async def load_then_reload():
        with taddons.context(Proxyserver(), TlsConfig()) as tctx:
            tctx.options.update(confdir=str(tmp_path))
            tctx.options.update_defer(glance_gate_config=str(first))  # until the gate declares it
            tctx.master.addons.add(gate)
            tctx.master.addons.invoke_addon_sync(gate, hooks.ConfigureHook(set(tctx.options.keys())))
            loaded = [read() for read in readers]
            validator = gate.trusted.tokens()
            tctx.options.update(glance_gate_config=str(second))  # a new config while running
            return loaded, validator
    loaded, validator = asyncio.run(load_then_reload())

    assert loaded[0] is not None and all(config is loaded[0] for config in loaded)
    assert loaded[0].gateway.max_connections_per_client == 7
    assert [read().gateway.max_connections_per_client for read in readers] == [9] * 4
    assert all(read() is gate.config for read in readers)
    assert validator is not gate.trusted.tokens() is gate.gate.tokens, "trusted auth checks with the new validator"
    gate.done()


@pytest.fixture
def mitmproxy_type_checks(monkeypatch):
    """compose(lean=True) turns them off for the whole process: put them back after."""
    monkeypatch.setattr(http.MessageData, "__post_init__", http.MessageData.__post_init__)
    return http.MessageData.__post_init__


PATCHED = ("from mitmproxy.proxy.layers import http; from mitmproxy.proxy.layers.http import _http1; "
           "print(bool(getattr(http.HttpStream.handle_protocol_error, 'retries', False)"
           " and getattr(http.HttpStream.start_response_stream, 'pumps', False)"
           " and getattr(_http1.Http1Server.read_body, 'refuses_trailers', False)))")


def test_the_patches_are_installed_once_whoever_composes(mitmproxy_type_checks):
    def in_a_fresh_process(code: str) -> str:
        out = subprocess.run([sys.executable, "-c", f"{code}; {PATCHED}"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()
    assert in_a_fresh_process("import addons.compose") == "False", "importing patches nothing"
    assert in_a_fresh_process("from addons.compose import compose; from addons.metrics import Metrics; "
                              "compose(Metrics(serve=False, probe=False))") == "True"

    install_patches()
    patched = (http_layer.HttpStream.handle_protocol_error, http_layer.HttpStream.start_response_stream,
               _http1.Http1Server.read_body, _http1.Http1Client.read_body)
    assert patched[0].retries and patched[1].pumps and patched[2].refuses_trailers
    composed()
    compose(Metrics(serve=False, probe=False), lean=True)
    install_patches()
    assert (http_layer.HttpStream.handle_protocol_error, http_layer.HttpStream.start_response_stream,
            _http1.Http1Server.read_body, _http1.Http1Client.read_body) == patched, "never wrapped twice"


def mistyped_request() -> http.Request:
    return http.Request("glance", "80", b"GET", b"http", b"", b"/", b"HTTP/1.1",  # the port a str
                        http.Headers(), b"", None, 0.0, None)


def test_only_the_lean_master_skips_mitmproxys_type_checks(mitmproxy_type_checks):
    composed()
    with pytest.raises(TypeError, match="port"):
        mistyped_request()  # mitmdump keeps mitmproxy's checks
    compose(Metrics(serve=False, probe=False), lean=True)
    mistyped_request()
