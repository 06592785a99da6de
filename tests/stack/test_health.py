"""Health is what a decision needs, and a misconfiguration says what to fix:
the service login refused, a service user Glance would show only its own
images, an upstream URL that is not Glance. Each gets 503 `misconfigured`
on uploads, dependency_up 0 and dependency_misconfigured 1, and one log line
naming the fix, against the real stack."""

from __future__ import annotations

import httpx
import pytest

from tests.support.stack import Gateway, Stack, start_gateway, wait_until

OCTET = "application/octet-stream"


def upload(gw: Gateway, stack: Stack, image_id: str) -> httpx.Response:
    return httpx.put(f"{gw.url}/v2/images/{image_id}/file", content=b"data", timeout=30,
                     headers={"X-Auth-Token": stack.token("userA"), "Content-Type": OCTET})


def quota_for_userA(stack: Stack) -> dict:
    project = stack.user("userA")["project_id"]
    return {project: stack.usage(project) + 1024 * 1024}


@pytest.mark.parametrize("case, dependency, fix", [
    ("wrong password", "keystone", "check [keystone] username, password, project"),
    ("no admin role", "glance", "give it Glance's admin role"),
    ("upstream is not Glance", "glance", "check gateway.upstream"),
])
def test_misconfiguration_is_its_own_reason_and_says_what_to_fix(stack, tmp_path, case, dependency, fix):
    config: dict = {"quota": quota_for_userA(stack)}
    if case == "wrong password":
        config["service_user"] = {**stack.user("gateway"), "password": "not-the-password"}
    elif case == "no admin role":  # Glance's own service user: it may validate tokens, not list every image
        config["service_user"] = stack.user("glance")
    else:
        config["upstream"] = stack.keystone  # answers, but 404 to /v2/images
    with start_gateway(tmp_path, stack, **config) as gw:
        wait_until(lambda: gw.metric("glance_gate_dependency_misconfigured", dependency=dependency) == 1,
                   f"{dependency} never reported misconfigured")
        assert gw.metric("glance_gate_dependency_up", dependency=dependency) == 0
        assert f"dependency {dependency}: misconfigured: " in gw.log_text() and fix in gw.log_text()
        if case != "upstream is not Glance":  # (there, the image lookup itself goes to Keystone)
            image_id = stack.create_image()
            r = upload(gw, stack, image_id)
            assert r.status_code == 503, r.text
            assert fix in r.json()["message"]
            assert gw.metric("glance_gate_requests_total", code="503", reason="misconfigured") == 1
            stack.assert_untouched(image_id)


def test_a_healthy_gateway_reports_every_dependency_up(stack, tmp_path):
    with start_gateway(tmp_path, stack, quota=quota_for_userA(stack)) as gw:
        for dependency in ("keystone", "glance"):
            wait_until(lambda: gw.metric("glance_gate_dependency_up", dependency=dependency) == 1,
                       f"{dependency} never up")
            assert gw.metric("glance_gate_dependency_misconfigured", dependency=dependency) == 0
        image_id = stack.create_image()
        assert upload(gw, stack, image_id).status_code == 204
        stack.delete_image(image_id)
