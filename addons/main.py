"""`glance-gate --config config.toml`: the same addon on a lean mitmproxy Master.

Only the addons a reverse proxy needs are loaded: DumpMaster's defaults (flow
dumping, playback, body rewriting...) halve the request rate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from mitmproxy import exceptions, master, options
from mitmproxy.addons import core, disable_h2c, errorcheck, next_layer, proxyserver, tlsconfig

from addons import systemd
from addons.glance_gate import GlanceGate, make_addons
from policy import config as configuration

CONFDIR = os.environ.get("GLANCE_GATE_CONFDIR", "~/.glance-gate")


def make_master(config_path: str, config: configuration.Config, gate: GlanceGate) -> master.Master:
    gw = config.gateway
    # As mitmdump does: records reach the termlog handler, which filters by verbosity.
    logging.getLogger().setLevel(logging.DEBUG)
    sys.stdout.reconfigure(line_buffering=True)
    opts = options.Options(confdir=CONFDIR)
    m = master.Master(opts, with_termlog=True)
    m.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(),
                 disable_h2c.DisableH2C(), errorcheck.ErrorCheck(), tlsconfig.TlsConfig(), *make_addons(gate),
                 systemd.Ready(*gw.listen))
    m.options.update(
        mode=[f"reverse:{gw.upstream}@{gw.listen.host}:{gw.listen.port}"],
        glance_gate_config=config_path,
    )
    return m


async def serve(config_path: str, config: configuration.Config) -> None:
    gate = GlanceGate()
    m = make_master(config_path, config, gate)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, m.shutdown)
    loop.add_signal_handler(signal.SIGHUP, systemd.reloading, gate.listener_tls.reload)
    await m.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glance-gate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.toml", help="path to config.toml")
    args = parser.parse_args(argv)
    try:
        config = configuration.load(args.config)
        asyncio.run(serve(args.config, config))
    except (configuration.ConfigError, exceptions.OptionsError) as e:
        print(f"glance-gate: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
