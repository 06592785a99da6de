"""`[gateway] workers = 2` against the real stack: the same answers as one
worker, one view of both (metrics, audit), a worker killed -9 and restarted,
SIGHUP reloads (a bad config changes nothing), SIGTERM drains."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.redis_server import RedisServer
from tests.support.stack import Gateway, Stack, connect, start_gateway, stop, wait_serving, wait_until
from tests.support.api import assert_refusal, put

MiB = 1024 * 1024
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def two_workers(tmp: Path, stack: Stack, redis_server: RedisServer, quota: dict | None = None,
                **gateway_settings) -> Gateway:
    """The slow uploads below stall for as long as a test needs, however slow the
    machine: an idle timeout (60 s by default) would cut them first."""
    return start_gateway(tmp, stack, quota=quota,
                         quota_settings={"ledger": "redis", "redis_url": redis_server.url, "chunk_bytes": MiB},
                         gateway_settings={"workers": 2, "client_idle_timeout_seconds": 900, **gateway_settings})


def _socket_inode(port: int, peer_port: int) -> str | None:
    """The inode of the gateway's end of the loopback connection from peer_port."""
    want_local, want_remote = f"0100007F:{port:04X}", f"0100007F:{peer_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want_local and fields[2] == want_remote:
            return fields[9]
    return None


def worker_of(gw: Gateway, sock: socket.socket) -> int:
    """The pid of the worker that accepted this client connection."""
    port = urlsplit(gw.url).port

    def owner() -> int | None:
        inode = _socket_inode(port, sock.getsockname()[1])
        for pid in gw.worker_pids():
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if os.readlink(fd) == f"socket:[{inode}]":
                        return pid
                except OSError:
                    continue
        return None

    return wait_until(owner, "no worker accepted the connection", timeout=15)


class SlowUpload:
    """A raw-socket upload on `sock`, declaring `size` bytes, that sends the
    first MiB, then waits for `finish()`."""

    def __init__(self, gw: Gateway, stack: Stack, sock: socket.socket, size: int = 4 * MiB):
        self.stack, self.size, self.sock = stack, size, sock
        self.worker = worker_of(gw, sock)
        self.image_id = stack.create_image()
        head = (f"PUT /v2/images/{self.image_id}/file HTTP/1.1\r\nHost: glance\r\n"
                f"X-Auth-Token: {stack.token('userA')}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {size}\r\nConnection: close\r\n\r\n").encode()
        self.sock.sendall(head + os.urandom(MiB))
        wait_until(lambda: stack.image(self.image_id)["status"] == "saving", "the upload never reached Glance")

    def finish(self) -> int:
        """Sends the rest; the status of the answer, or 0 if the connection died."""
        try:
            self.sock.sendall(os.urandom(self.size - MiB))
            answer = b""
            while chunk := self.sock.recv(65536):
                answer += chunk
        except OSError:
            return 0
        finally:
            self.sock.close()
        return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def slow_uploads_on_both(gw: Gateway, stack: Stack) -> dict[int, SlowUpload]:
    """One slow upload on each worker. The kernel picks the worker of a
    connection: connect until both have one, and upload only on the first of
    each (a stalled upload holds one of Glance's few threads)."""
    by_worker: dict[int, SlowUpload] = {}
    for _ in range(48):
        sock = connect(gw.url)
        sock.settimeout(60)
        if worker_of(gw, sock) in by_worker:
            sock.close()
            continue
        upload = SlowUpload(gw, stack, sock)
        by_worker[upload.worker] = upload
        if len(by_worker) == 2:
            return by_worker
    raise AssertionError("48 connections, all to one worker")


def versions_on_fresh_connections(gw: Gateway, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        try:
            statuses.append(httpx.get(f"{gw.url}/versions", headers={"Connection": "close"}, timeout=30).status_code)
        except httpx.HTTPError:
            statuses.append(0)
    return statuses


def test_two_workers_answer_as_one_and_count_everything_once(stack, tmp_path, redis_server):
    project = stack.user("userB")["project_id"]
    quota = stack.usage(project) + 2 * MiB
    gw = two_workers(tmp_path, stack, redis_server, quota={project: quota})
    try:
        assert len(gw.worker_pids()) == 2
        with httpx.Client(base_url=gw.url, timeout=60) as client:
            ok = stack.create_image()
            assert put(client, ok, stack.token("userA"), os.urandom(MiB)).status_code == 204
            assert stack.image(ok)["size"] == MiB
            bad = stack.create_image()
            assert_refusal(put(client, bad, "forged"), 401, "authenticat")
            assert_refusal(put(client, bad, stack.token("userA"), headers={"Content-Type": "text/plain"}),
                           415, "content-type")
            stack.assert_untouched(bad)
            big = stack.create_image(user="userB")
            assert_refusal(put(client, big, stack.token("userB"), os.urandom(3 * MiB)), 413, "quota")
            stack.assert_untouched(big)
            cut = stack.create_image(user="userB")
            body = (os.urandom(64 * 1024) for _ in range(48))  # chunked, 3 MiB: cut at 2 MiB
            assert_refusal(put(client, cut, stack.token("userB"), body), 413, "quota")
            stack.assert_untouched(cut, cut=True)
        statuses = versions_on_fresh_connections(gw, 40)
        assert statuses == [200] * 40
        assert gw.metric("glance_gate_requests_total", code="200", route="other") == 40
        assert gw.metric("glance_gate_requests_total", code="204") == 1
        assert gw.metric("glance_gate_requests_total", code="401") == 1
        assert gw.metric("glance_gate_requests_total", code="415") == 1
        assert gw.metric("glance_gate_requests_total", code="413", reason="quota") == 2
        assert gw.metric("glance_gate_upload_bytes_total") >= MiB
        assert gw.metric("glance_gate_workers") == 2
        assert gw.metric("process_resident_memory_bytes") > 0
        assert gw.metric("process_cpu_seconds_total") > 0
        wait_until(lambda: gw.metric("glance_gate_dependency_up", dependency="redis") == 1, "no redis probe")
        assert [r["status"] for r in gw.audit()] == [204, 401, 415, 413, 413]
        stack.delete_image(ok)
    finally:
        stop(gw.proc)


def test_audit_lines_of_two_workers_never_interleave_and_logrotate_works(stack, tmp_path, redis_server):
    """Concurrent refusals over both workers (long lines: each names the image),
    then the file is moved away as logrotate does: new lines go to a new file."""
    gw = two_workers(tmp_path, stack, redis_server)
    try:
        image_id = stack.create_image()
        path = gw.config.with_suffix(".audit.jsonl")

        def refusals(n: int) -> None:
            procs = [subprocess.Popen([sys.executable, "-c", (
                "import httpx,sys\n"
                "for _ in range(25):\n"
                f"    httpx.put('{gw.url}/v2/images/{image_id}/file', content=b'x',"
                " headers={'X-Auth-Token': 'forged', 'Content-Type': 'application/octet-stream',"
                " 'Connection': 'close'})\n")]) for _ in range(n)]
            for p in procs:
                assert p.wait(120) == 0

        refusals(4)
        wait_until(lambda: len(gw.audit()) == 100, "100 audit lines")
        path.rename(path.with_suffix(".1"))
        refusals(2)
        rotated = [json.loads(line) for line in path.with_suffix(".1").read_text().splitlines()]
        assert len(rotated) == 100 and {r["status"] for r in rotated} == {401}
        wait_until(lambda: len(gw.audit()) == 50, "50 audit lines in the new file")
    finally:
        stop(gw.proc)


def test_kill_9_of_a_worker_loses_no_other_upload_and_it_is_restarted(stack, tmp_path, redis_server):
    gw = two_workers(tmp_path, stack, redis_server)
    try:
        uploads = slow_uploads_on_both(gw, stack)
        victim, survivor = list(uploads)
        os.kill(victim, signal.SIGKILL)
        assert uploads[survivor].finish() == 204
        assert stack.image(uploads[survivor].image_id)["size"] == 4 * MiB
        assert uploads[victim].finish() == 0
        stack.assert_untouched(uploads[victim].image_id, cut=True)
        wait_until(lambda: len(gw.worker_pids()) == 2 and victim not in gw.worker_pids(), "no restart")
        wait_serving(gw, 2)
        assert gw.metric("glance_gate_worker_restarts_total") == 1
        assert "worker 0 (pid" in gw.log_text() or "worker 1 (pid" in gw.log_text()
        assert versions_on_fresh_connections(gw, 20) == [200] * 20
        for upload in uploads.values():
            if upload.image_id != uploads[victim].image_id:
                stack.delete_image(upload.image_id)
    finally:
        stop(gw.proc)


def test_sighup_reloads_without_dropping_a_connection_and_a_bad_config_changes_nothing(
        stack, tmp_path, redis_server):
    project = stack.user("userB")["project_id"]
    usage = stack.usage(project)
    # drain_seconds: the old workers' uploads finish after the 60 requests below, however slow the machine
    gw = two_workers(tmp_path, stack, redis_server, quota={project: usage + 4 * MiB}, drain_seconds=300)
    text = gw.config.read_text()
    try:
        old = set(gw.worker_pids())
        in_flight = slow_uploads_on_both(gw, stack)
        gw.config.write_text(text.replace(f"= {usage + 4 * MiB}", f"= {usage + MiB}"))
        os.kill(gw.proc.pid, signal.SIGHUP)
        # while the workers are replaced: fresh connections, every one answered
        statuses = versions_on_fresh_connections(gw, 60)
        wait_until(lambda: "reloaded: config generation 2" in gw.log_text(), "no reload")
        assert statuses == [200] * 60
        for upload in in_flight.values():  # begun on the old workers, which drain
            assert upload.finish() == 204, gw.log_text()[-4000:]
            stack.delete_image(upload.image_id)
        wait_until(lambda: not old & set(gw.worker_pids()) and len(gw.worker_pids()) == 2, "old workers left")
        new = set(gw.worker_pids())
        with httpx.Client(base_url=gw.url, timeout=60) as client:
            image_id = stack.create_image(user="userB")
            assert_refusal(put(client, image_id, stack.token("userB"), os.urandom(2 * MiB)), 413, "quota")

            gw.config.write_text(text.replace("cache_seconds = 300", 'cache_seconds = "soon"'))
            os.kill(gw.proc.pid, signal.SIGHUP)
            wait_until(lambda: "reload refused, the running config stays: keystone.cache_seconds:"
                       in gw.log_text(), "the bad config was not refused")
            assert set(gw.worker_pids()) == new
            assert_refusal(put(client, image_id, stack.token("userB"), os.urandom(2 * MiB)), 413, "quota")
            assert put(client, image_id, stack.token("userB"), os.urandom(MiB // 2)).status_code == 204
            stack.delete_image(image_id, "userB")
            image_id = stack.create_image(user="userB")

            # valid to the schema, but no worker can start on it: the keys are read at start
            gw.config.write_text(text.replace("[identity]\n", '[identity]\nmode = "keystone-jws"\n'
                                              'jws_public_keys = "/nonexistent"\n'))
            os.kill(gw.proc.pid, signal.SIGHUP)
            wait_until(lambda: "the new worker did not start" in gw.log_text(),
                       f"a failing worker was not refused:\n{gw.log_text()[-3000:]}")
            assert set(gw.worker_pids()) == new
            assert put(client, image_id, stack.token("userB"), os.urandom(MiB // 2)).status_code == 204
            stack.delete_image(image_id, "userB")

            gw.config.write_text(text.replace('metrics = "', 'metrics = "127.0.0.2:1" #'))
            os.kill(gw.proc.pid, signal.SIGHUP)
            wait_until(lambda: "gateway.metrics changed, which needs a restart" in gw.log_text(), "not refused")
            assert set(gw.worker_pids()) == new
    finally:
        stop(gw.proc)


def test_sigterm_drains_in_flight_uploads_then_exits(stack, tmp_path, redis_server):
    gw = two_workers(tmp_path, stack, redis_server)
    uploads = slow_uploads_on_both(gw, stack)
    os.kill(gw.proc.pid, signal.SIGTERM)
    wait_until(lambda: "draining 2 workers" in gw.log_text(), "no drain")

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", urlsplit(gw.url).port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    wait_until(refused, "still accepting connections while draining", timeout=10)
    for upload in uploads.values():
        assert upload.finish() == 204
        assert stack.image(upload.image_id)["size"] == 4 * MiB
        stack.delete_image(upload.image_id)
    assert gw.proc.wait(30) == 0


def test_sigterm_cuts_what_outlasts_the_drain(stack, tmp_path, redis_server):
    gw = two_workers(tmp_path, stack, redis_server, drain_seconds=1)
    uploads = slow_uploads_on_both(gw, stack)
    os.kill(gw.proc.pid, signal.SIGTERM)
    assert gw.proc.wait(30) == 0
    for upload in uploads.values():
        assert upload.finish() == 0
        stack.assert_untouched(upload.image_id, cut=True)
