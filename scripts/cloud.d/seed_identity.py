"""For CLOUD_IDENTITY=1: the JWS Keystone as the identity endpoint of its own
region, so that the authtoken of the Glance that trusts it (region_name =
REGION_JWS) validates there. The default region's catalog stays as it is.

Inputs from scripts/cloud: KEYSTONE_URL (admin login), KEYSTONE_JWS_URL, REGION_JWS."""
import json
import os
import urllib.request

E = os.environ
V3 = E["KEYSTONE_URL"] + "/v3"


def call(method, path, token=None, body=None):
    req = urllib.request.Request(V3 + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json", **({"X-Auth-Token": token} if token else {})})
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None, resp.headers


_, headers = call("POST", "/auth/tokens?nocatalog", body={"auth": {
    "identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "password": "admin-secret", "domain": {"id": "default"}}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
admin = headers["X-Subject-Token"]
region = E["REGION_JWS"]
if region not in [r["id"] for r in call("GET", "/regions", admin)[0]["regions"]]:
    call("POST", "/regions", admin, {"region": {"id": region}})
service = call("GET", "/services?type=identity", admin)[0]["services"][0]["id"]
endpoints = call("GET", f"/endpoints?service_id={service}&interface=public&region_id={region}", admin)[0]
endpoint = {"service_id": service, "interface": "public", "url": E["KEYSTONE_JWS_URL"], "region_id": region}
ours = [e for e in endpoints["endpoints"] if e["region_id"] == region]
if not ours:
    call("POST", "/endpoints", admin, {"endpoint": endpoint})
elif ours[0]["url"] != endpoint["url"]:  # the same state dir, brought up on other ports
    call("PATCH", f"/endpoints/{ours[0]['id']}", admin, {"endpoint": endpoint})
