"""Idempotent seeding of the local Keystone for scripts/cloud.

Talks plain HTTP to the Keystone v3 API (stdlib only), as the bootstrap
admin.  Creates what is missing, never deletes, and only resets a password
when the expected one no longer works (a password change would revoke the
user's live tokens).  Finally writes cloud.json with everything tests need.

All inputs come from environment variables set by scripts/cloud.
"""
import json
import os
import sys
import urllib.error
import urllib.request

E = os.environ
KEYSTONE = E["KEYSTONE_URL"].rstrip("/")          # http://127.0.0.1:5000
V3 = KEYSTONE + "/v3"
REGION = E.get("REGION", "RegionOne")
DOMAIN = "default"                                  # id of domain "Default"

# name -> (password, project, roles in that project)
USERS = {
    "admin": ("admin-secret", "admin", ["admin"]),
    "glance": (E["GLANCE_SERVICE_PASSWORD"], "service",
               E.get("GLANCE_SERVICE_ROLES", "service").split()),
    "gateway": ("gateway-secret", "service",
                E.get("GATEWAY_ROLES", "service").split()),
    "userA": ("userA-secret", "projA", ["member"]),
    "userB": ("userB-secret", "projB", ["member"]),
    "userQ": ("userQ-secret", "projQ", ["member"]),  # the quota tests' own project
}
PROJECTS = {
    "service": "service users (glance, gateway)",
    "projA": "tenant A",
    "projB": "tenant B",
    "projQ": "tenant Q (quota tests)",
}
ROLES = ["admin", "member", "reader", "service"]


class HTTPFail(Exception):
    pass


def call(method, path, token=None, body=None, ok=(200, 201, 204),
         headers=None):
    url = path if path.startswith("http") else V3 + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, raw, hdrs = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        status, raw, hdrs = e.code, e.read(), e.headers
    if status not in ok:
        raise HTTPFail(f"{method} {url} -> {status}: {raw[:500]!r}")
    return status, (json.loads(raw) if raw else None), hdrs


def password_token(user, password, project):
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": DOMAIN}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": DOMAIN}}},
    }}
    _, js, hdrs = call("POST", "/auth/tokens?nocatalog", body=body)
    return hdrs["X-Subject-Token"], js["token"]


def find_one(coll, key, **query):
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    _, js, _ = call("GET", f"/{coll}?{qs}", token=ADMIN)
    items = js[key]
    return items[0] if items else None


def ensure(coll, key, entity, body, **query):
    found = find_one(coll, key, **query)
    if found:
        return found, False
    _, js, _ = call("POST", f"/{coll}", token=ADMIN, body={entity: body})
    return js[entity], True


def log(msg):
    print(f"seed: {msg}", file=sys.stderr)


ADMIN, _ = password_token("admin", "admin-secret", "admin")

role_ids = {}
for r in ROLES:
    role, new = ensure("roles", "roles", "role", {"name": r}, name=r)
    role_ids[r] = role["id"]
    if new:
        log(f"created role {r}")

project_ids = {}
for name, desc in PROJECTS.items():
    proj, new = ensure("projects", "projects", "project",
                       {"name": name, "domain_id": DOMAIN,
                        "description": desc, "enabled": True},
                       name=name, domain_id=DOMAIN)
    project_ids[name] = proj["id"]
    if new:
        log(f"created project {name}")
_, admin_proj = password_token("admin", "admin-secret", "admin")
project_ids["admin"] = admin_proj["project"]["id"]

user_ids = {}
for name, (password, project, roles) in USERS.items():
    user, new = ensure("users", "users", "user",
                       {"name": name, "domain_id": DOMAIN,
                        "password": password, "enabled": True,
                        "default_project_id": project_ids[project]},
                       name=name, domain_id=DOMAIN)
    uid = user_ids[name] = user["id"]
    if new:
        log(f"created user {name}")
    for r in roles:
        call("PUT", f"/projects/{project_ids[project]}/users/{uid}"
             f"/roles/{role_ids[r]}", token=ADMIN)

# Passwords: check after the grants (a project-scoped token needs a role).
for name, (password, project, _roles) in USERS.items():
    try:
        password_token(name, password, project)
    except HTTPFail:
        log(f"resetting password of {name}")
        call("PATCH", f"/users/{user_ids[name]}", token=ADMIN,
             body={"user": {"password": password}})
        password_token(name, password, project)

# Catalog: identity endpoints come from keystone-manage bootstrap; the image
# service points at the GATEWAY so clients go through it.
def ensure_endpoints(stype, sname, url):
    svc, new = ensure("services", "services", "service",
                      {"type": stype, "name": sname, "enabled": True,
                       "description": f"{sname} ({stype})"}, type=stype)
    if new:
        log(f"created service {sname}")
    for iface in ("public", "internal", "admin"):
        ep = find_one("endpoints", "endpoints", service_id=svc["id"],
                      interface=iface)
        body = {"service_id": svc["id"], "interface": iface, "url": url,
                "region_id": REGION, "enabled": True}
        if ep is None:
            call("POST", "/endpoints", token=ADMIN, body={"endpoint": body})
            log(f"created {iface} endpoint {sname} -> {url}")
        elif ep["url"] != url or ep.get("region_id") != REGION:
            call("PATCH", f"/endpoints/{ep['id']}", token=ADMIN,
                 body={"endpoint": body})
            log(f"updated {iface} endpoint {sname} -> {url}")
    return svc["id"]


image_service = ensure_endpoints("image", "glance", E["GATEWAY_URL"])
ensure_endpoints("identity", "keystone", KEYSTONE)

# Keystone unified limits for Glance's use_keystone_limits: Glance's oslo_limit
# reads every project's limits with the glance user, which needs a system-scoped
# reader role (a project-scoped token lists only its own project's limits).
_, _, hdrs = call("POST", "/auth/tokens?nocatalog", body={"auth": {
    "identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": DOMAIN}, "password": "admin-secret"}}},
    "scope": {"system": {"all": True}}}})
SYSTEM = hdrs["X-Subject-Token"]  # limits and system grants are system-scoped (enforce_scope)
call("PUT", f"/system/users/{user_ids['glance']}/roles/{role_ids['reader']}", token=SYSTEM)
# Registered defaults for Glance's four resources, generous so that Glance's own
# soft checks never decide a test; tests set a project's own limit where they need one.
GLANCE_LIMITS = {"image_size_total": 1024 * 1024, "image_stage_total": 1024 * 1024,  # MiB
                 "image_count_total": 100_000, "image_count_uploading": 1000}
# In the region, as oslo_limit looks them up for Glance's endpoint.
_, js, _ = call("GET", f"/registered_limits?service_id={image_service}&region_id={REGION}", token=SYSTEM)
have = {r["resource_name"] for r in js["registered_limits"]}
missing = [{"service_id": image_service, "region_id": REGION, "resource_name": name, "default_limit": value}
           for name, value in GLANCE_LIMITS.items() if name not in have]
if missing:
    call("POST", "/registered_limits", token=SYSTEM, body={"registered_limits": missing})
    log(f"registered limits {', '.join(r['resource_name'] for r in missing)}")

users_out = {}
for name, (password, project, roles) in USERS.items():
    users_out[name] = {
        "username": name, "password": password,
        "user_domain": "Default", "project_domain": "Default",
        "project": project, "project_id": project_ids[project],
        "user_id": user_ids[name], "roles": roles,
    }

state = E["STATE"]
cloud = {
    "keystone_url": V3,
    "auth_url": V3,
    "keystone_root": KEYSTONE,
    "glance_url": E["GLANCE_URL"],
    "glance_limits_url": E["GLANCE_LIMITS_URL"],  # the same Glance with use_keystone_limits: GET /v2/info/usage
    "gateway_url": E["GATEWAY_URL"],
    "region": REGION,
    "state_dir": state,
    "users": users_out,
    "projects": {n: project_ids[n] for n in
                 ("admin", "service", "projA", "projB", "projQ")},
    "venvs": {"keystone": E["VENV_KEYSTONE"], "glance": E["VENV_GLANCE"],
              "client": E["VENV_CLIENT"]},
    "bin": {"openstack": os.path.join(E["VENV_CLIENT"], "bin", "openstack"),
            "python_client": os.path.join(E["VENV_CLIENT"], "bin", "python")},
    "logs": {"keystone": E["LOG_KEYSTONE"], "glance": E["LOG_GLANCE"]},
    "pids": {"keystone": E["PID_KEYSTONE"], "glance": E["PID_GLANCE"]},
    "glance_store_dir": E["GLANCE_IMAGES_DIR"],
    "glance_config_dir": E["GLANCE_CONF_DIR"],
}
out = E["CLOUD_JSON"]
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(cloud, f, indent=2)
    f.write("\n")
os.replace(tmp, out)
