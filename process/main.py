"""`glance-gate --config config.toml`: the same addon on a lean mitmproxy Master.

Only the addons a reverse proxy needs are loaded: DumpMaster's defaults (flow
dumping, playback, body rewriting...) halve the request rate. `glance-gate`
runs the supervisor (process/supervisor.py), which runs `[gateway] workers`
of these Masters, each with `--worker` on a socket the supervisor bound."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import time

from policy import config as configuration
from policy.exceptions import ConfigError

# mitmproxy and the addon are imported in a worker only: the supervisor stays small.
CONFDIR = os.environ.get("GLANCE_GATE_CONFDIR", "~/.glance-gate")
PR_SET_PDEATHSIG = 1


class WorkerLifecycle:
    """A worker's life under the supervisor: says when it listens, and drains on SIGTERM."""

    def __init__(self, ending, drain_seconds: float):
        self.ending, self.drain_seconds = ending, drain_seconds  # ending: what is in flight
        self._draining: asyncio.Task | None = None

    def running(self) -> None:
        if fd := os.environ.get("GLANCE_GATE_READY_FD"):
            os.write(int(fd), b"1")
            os.close(int(fd))

    def drain(self, master) -> None:
        if not self._draining:
            self._draining = asyncio.get_running_loop().create_task(self._drain(master))

    async def _drain(self, master) -> None:
        """Stop accepting; let in-flight requests finish for up to drain_seconds,
        then stop, which cuts what is left as a kill would (Glance sees it incomplete)."""
        from addons import wire

        wire.stop_accepting()
        self.ending.draining = True
        deadline = time.monotonic() + self.drain_seconds
        while self.ending.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.ending.in_flight:
            logging.getLogger("glance_gate").warning(
                "drain: %d requests still in flight after %g s: cut", self.ending.in_flight, self.drain_seconds)
        master.shutdown()


def make_master(config_path: str, config: configuration.Config, worker: bool = False):
    from mitmproxy import master, options
    from mitmproxy.addons import core, disable_h2c, errorcheck, next_layer, proxyserver, tlsconfig

    from addons import metrics
    from addons.compose import compose

    gw = config.gateway
    # As mitmdump does: records reach the termlog handler, which filters by verbosity.
    logging.getLogger().setLevel(logging.DEBUG)
    # Not a line per connection and per call to Keystone or Glance: each costs CPU
    # on every request. Warnings and errors stay; decisions are the audit trail.
    for chatty in ("mitmproxy.proxy.server", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    sys.stdout.reconfigure(line_buffering=True)
    opts = options.Options(confdir=CONFDIR)
    m = master.Master(opts, with_termlog=True)
    # Under the supervisor, it serves /metrics; one worker (slot 0) probes the dependencies.
    gateway, ending = compose(metrics.Metrics(serve=not worker, probe=os.environ.get("GLANCE_GATE_WORKER", "0") == "0"),
                              lean=True)
    m.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(),
                 disable_h2c.DisableH2C(), errorcheck.ErrorCheck(), tlsconfig.TlsConfig(), *gateway)
    if worker:
        m.addons.add(WorkerLifecycle(ending, gw.drain_seconds))
    m.options.update(
        mode=[f"reverse:{gw.upstream}@{gw.listen.host}:{gw.listen.port}"],
        glance_gate_config=config_path,
    )
    return m


async def serve_worker(config_path: str, config: configuration.Config) -> None:
    from addons import wire
    from process import supervisor

    # Die with the supervisor, even by kill -9: no orphan keeps serving.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(os.environ["GLANCE_GATE_SUPERVISOR"]):
        return
    wire.listen_on(socket.socket(fileno=int(os.environ["GLANCE_GATE_LISTEN_FD"])), supervisor.BACKLOG)
    m = make_master(config_path, config, worker=True)
    worker = m.addons.get("workerlifecycle")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.drain, m)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the supervisor's to handle
    await m.run()


def operate(argv: list[str]) -> int:
    """`glance-gate usage [PROJECT…]`, `glance-gate reconcile PROJECT`: no proxy, the shared ledger."""
    from policy.exceptions import Unavailable
    from policy.quota import operator

    parser = argparse.ArgumentParser(prog=f"glance-gate {argv[0]}")
    parser.add_argument("--config", default="config.toml", help="path to config.toml")
    parser.add_argument("projects", nargs="*" if argv[0] == "usage" else 1, metavar="PROJECT")
    args = parser.parse_args(argv[1:])
    try:
        config = configuration.load(args.config)
        return asyncio.run(operator.run(config, argv[0], args.projects, print))
    except ConfigError as e:
        print(f"glance-gate: {e}", file=sys.stderr)
    except Unavailable as e:
        print(f"glance-gate {argv[0]}: {e.dependency} is unavailable: {e.detail}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("usage", "reconcile"):
        return operate(argv)
    parser = argparse.ArgumentParser(prog="glance-gate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.toml", help="path to config.toml")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        config = configuration.load(args.config)
    except ConfigError as e:
        print(f"glance-gate: {e}", file=sys.stderr)
        return 2
    if not args.worker:
        from process.supervisor import supervise

        return supervise(args.config, config)
    from mitmproxy import exceptions

    try:
        asyncio.run(serve_worker(args.config, config))
    except exceptions.OptionsError as e:
        print(f"glance-gate: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
