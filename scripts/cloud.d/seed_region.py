"""A region of its own for the extras of scripts/cloud, so that a client or an
authtoken in that region finds them in the catalog while the default region's
catalog stays as it is:
  CLOUD_IDENTITY=1: the JWS Keystone as RegionJWS's identity endpoint (the
                    authtoken of the Glance that trusts it validates there);
  CLOUD_TLS=1:      RegionTLS, whose identity and image endpoints are the
                    HTTPS Keystone and the HTTPS gateway.

Inputs from scripts/cloud: KEYSTONE_URL (admin login), REGION, and ENDPOINTS,
"type=url ..." (e.g. "identity=https://127.0.0.1:5002 image=https://127.0.0.1:9394")."""
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
region = E["REGION"]
if region not in [r["id"] for r in call("GET", "/regions", admin)[0]["regions"]]:
    call("POST", "/regions", admin, {"region": {"id": region}})
for kind, url in (pair.split("=", 1) for pair in E["ENDPOINTS"].split()):
    service = call("GET", f"/services?type={kind}", admin)[0]["services"][0]["id"]
    for interface in ("public", "internal"):
        found = [e for e in call("GET", f"/endpoints?service_id={service}&interface={interface}&region_id={region}",
                                 admin)[0]["endpoints"] if e["region_id"] == region]
        body = {"endpoint": {"service_id": service, "interface": interface, "url": url, "region_id": region}}
        if not found:
            call("POST", "/endpoints", admin, body)
        elif found[0]["url"] != url:
            call("PATCH", f"/endpoints/{found[0]['id']}", admin, body)
