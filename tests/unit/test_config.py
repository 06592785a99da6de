"""The config schema: what an operator's typo or misread URL gets at start,
and that config.toml and README's key tables name exactly the schema's keys."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from policy import config as configuration
from policy.config import Config, IdentityConf
from policy.exceptions import ConfigError
from policy.redis_client import SentinelURL

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = tomllib.loads((REPO / "config.toml").read_text())


def config_with(**over) -> dict:
    """A minimal valid config with `section__key=value` overrides (value None deletes)."""
    data = {
        "gateway": {"listen": "127.0.0.1:9393", "upstream": "http://127.0.0.1:9292",
                    "metrics": "127.0.0.1:9394"},
        "keystone": {"url": "http://127.0.0.1:5000", "username": "gw", "password": "p",
                     "project": "service"},
        "quota": {"default_bytes": 100},
    }
    for dotted, value in over.items():
        section, key = dotted.split("__")
        if value is None:
            data[section].pop(key)
        else:
            data.setdefault(section, {})[key] = value
    return data


def error(data: dict) -> str:
    with pytest.raises(ConfigError) as e:
        configuration.parse(data)
    return str(e.value)


def test_defaults():
    c = configuration.parse(config_with())
    assert c.keystone.cache_seconds == 300
    assert c.policy.admin_roles == {"admin"}
    assert c.quota.limit_for("any") == 100
    assert c.gateway.client_idle_timeout_seconds == 60
    assert c.audit.path == "-"
    assert c.identity == IdentityConf(mode="keystone", trusted_auth=False)


def test_example_config_is_valid():
    c = configuration.load(REPO / "config.toml")
    assert c.gateway.listen == ("127.0.0.1", 9393)


@pytest.mark.parametrize("over, message", [
    # the typos of issue 12, each once silently ignored or rounded
    ({"quota__ledger_dwn": "allow"}, "quota.ledger_dwn: unknown key"),
    ({"policy__admin_role": ["x"]}, "policy.admin_role: unknown key"),
    ({"keystone__cache_seconds": 0.5}, "keystone.cache_seconds: input should be a valid integer, got 0.5"),
    ({"keystone__cache_seconds": "soon"}, "keystone.cache_seconds: input should be a valid integer"),
    ({"keystone__cache_seconds": True}, "keystone.cache_seconds: input should be a valid integer, got True"),
    ({"keystone__cache_seconds": 0}, "keystone.cache_seconds: input should be greater than 0"),
    ({"keystone__password": None}, "keystone.password: set exactly one of keystone.password, keystone.password_file, "
                                   "GLANCE_GATE_KEYSTONE_PASSWORD or keystone.application_credential_id, got none"),
    ({"keystone__password": ""}, "keystone.password: set exactly one of"),
    ({"keystone__username": None}, "keystone.username: required"),
    ({"keystone__password_file": "/nonexistent"}, "keystone.password_file: cannot read /nonexistent: No such file"),
    ({"keystone__ca_file": "/etc/ssl/certs/ca-certificates.crt"},
     "keystone.ca_file: needs an https:// keystone.url or identity.jwks_url"),
    ({"gateway__upstream_ca_file": "/etc/hostname"}, "gateway.upstream_ca_file: needs an https:// upstream"),
    ({"gateway__tls_cert_file": "/etc/hostname"}, "gateway.tls_key_file: required with tls_cert_file"),
    ({"gateway__upstream": "https://g:9292", "gateway__upstream_client_key_file": "/etc/hostname"},
     "gateway.upstream_client_cert_file: required with upstream_client_key_file"),
    ({"gateway__upstream": "https://g:9292", "gateway__upstream_ca_file": "/etc/hostname"},
     "gateway.upstream_ca_file: does not load: NO_CERTIFICATE_OR_CRL_FOUND"),
    ({"gateway__listen": "nohost"}, "gateway.listen: must be host:port, got 'nohost'"),
    ({"gateway__upstream": "ftp://x"}, "gateway.upstream: must be an http(s) URL"),
    ({"gateway__upstream": "http://g:9292/v2"}, "gateway.upstream: must be scheme://host:port with no path"),
    ({"gateway__upstream_timeout_seconds": -1}, "gateway.upstream_timeout_seconds: input should be greater than 0"),
    ({"gateway__client_idle_timeout_seconds": 2.5}, "gateway.client_idle_timeout_seconds: input should be a valid integer"),
    ({"gateway__trusted_proxies": ["lb.example"]}, "gateway.trusted_proxies.0: must be an IP address, got 'lb.example'"),
    ({"gateway__max_connections_per_client": 0}, "gateway.max_connections_per_client: input should be greater than or equal to 1"),
    ({"gateway__request_head_seconds": 0}, "gateway.request_head_seconds: input should be greater than 0"),
    ({"keystone__url": "http://k:5000/v2.0"}, "keystone.url: must be Keystone's root, without a version"),
    ({"keystone__url": "http://k:5000/?x=1"}, "keystone.url: must have no query or fragment"),
    ({"quota__default_bytes": -2}, "quota.default_bytes: input should be greater than or equal to -1"),
    ({"quota__default_bytes": None}, "quota.default_bytes: required"),
    ({"quota__projects": {"p1": 1.5}}, "quota.projects.p1: input should be a valid integer"),
    ({"quota__ledger": "etcd"}, "quota.ledger: input should be 'memory' or 'redis'"),
    ({"quota__ledger": "redis"}, "quota.redis_url: must be a redis:// or redis+sentinel:// URL"),
    ({"quota__ledger": "redis", "quota__redis_url": "rediss+sentinel://s:26379/gg"},
     "quota.redis_url: must be a redis:// or redis+sentinel:// URL"),
    ({"quota__ledger": "redis", "quota__redis_url": "redis+sentinel://s1:26379,s2:26379"},
     "quota.redis_url: names no service (the form is redis+sentinel://[[user]:password@]host:port"),
    ({"quota__ledger": "redis", "quota__redis_url": "redis+sentinel://s1:26379,/gg"},
     "quota.redis_url: sentinel '' is not host:port"),
    ({"quota__ledger": "redis", "quota__redis_url": "redis+sentinel://s1:263790/gg"},
     "quota.redis_url: sentinel 's1:263790': Port out of range"),
    ({"quota__ledger": "redis", "quota__redis_url": "redis+sentinel://s1/gg/zero"},
     "quota.redis_url: database 'zero' is not a number"),
    ({"quota__ledger": "redis", "quota__redis_url": "redis+sentinel://s1/gg?db=1"},
     "quota.redis_url: takes no query or fragment"),
    ({"quota__max_uploads": -2}, "quota.max_uploads: input should be greater than or equal to -1"),
    ({"quota__chunk_bytes": 1024}, "quota.chunk_bytes: input should be greater than or equal to 1048576"),
    ({"quota__ledger_down": "maybe"}, "quota.ledger_down: input should be 'refuse' or 'allow'"),
    ({"quota__keystone_limits": 1}, "quota.keystone_limits: input should be a valid boolean, got 1"),
    ({"policy__admin_roles": "admin"}, "policy.admin_roles: input should be a valid frozenset"),
    ({"policy__admin_roles": [""]}, "policy.admin_roles."),
    ({"audit__path": ""}, "audit.path: string should have at least 1 character"),
    ({"identity__mode": "ldap"}, "identity.mode: input should be 'keystone', 'keystone-jws' or 'jwt'"),
    ({"identity__mode": "keystone-jws"}, "identity.jws_public_keys: required"),
    ({"identity__mode": "keystone-jws", "identity__jws_public_keys": "/k", "identity__trusted_auth": True},
     "identity.trusted_auth: needs roles"),
    ({"identity__mode": "jwt", "identity__jwks_url": "http://i/jwks", "identity__issuer": "i",
      "identity__audience": "a"}, 'identity.trusted_auth: must be true with mode = "jwt"'),
    ({"identity__mode": "jwt", "identity__trusted_auth": True, "identity__jwks_url": "http://i/jwks",
      "identity__issuer": "i"}, "identity.audience: required"),
    ({"identity__jwks_url": "idp/jwks"}, "identity.jwks_url: must be an http(s) URL"),
    ({"identity__algorithms": ["HS256"]}, "identity.algorithms.0: input should be 'ES256'"),
    ({"identity__algorithms": ["none"]}, "identity.algorithms.0: input should be 'ES256'"),
    ({"identity__algorithms": []}, "identity.algorithms: tuple should have at least 1 item"),
    ({"identity__leeway_seconds": 3600}, "identity.leeway_seconds: input should be less than or equal to 60"),
    ({"identity__trusted_auth": "yes"}, "identity.trusted_auth: input should be a valid boolean, got 'yes'"),
])
def test_errors_name_the_full_key_path(over, message):
    assert error(config_with(**over)).startswith(message)


def test_a_sentinel_url_names_the_sentinels_and_the_service():
    url = "redis+sentinel://:s%40cret@10.0.0.1:26379,[fd00::2]:26380,sentinel3/glance-gate/2"
    assert configuration.parse(config_with(quota__ledger="redis", quota__redis_url=url)).quota.redis_url == url
    assert SentinelURL.parse(url) == SentinelURL(
        (("10.0.0.1", 26379), ("fd00::2", 26380), ("sentinel3", 26379)), "glance-gate", 2, None, "s@cret")


def test_unknown_section_and_a_key_that_is_not_a_table():
    assert error({**config_with(), "qouta": {}}) == "qouta: unknown section"
    assert error({**config_with(), "audit": "-"}) == "audit: must be a table"


def test_every_error_is_reported_at_once():
    assert error(config_with(quota__ledger_dwn="allow", keystone__cache_seconds=0.5)) == (
        "keystone.cache_seconds: input should be a valid integer, got 0.5; quota.ledger_dwn: unknown key")


@pytest.mark.parametrize("url", ["http://k:5000/v3", "http://k:5000/v3/", "http://k:5000/", "http://k:5000//"])
def test_keystone_url_forms_users_try_are_normalised(url):
    # The gateway appends /v3/...: a /v3 left in would make every service login a 404.
    assert configuration.parse(config_with(keystone__url=url)).keystone.url == "http://k:5000"


def test_keystone_url_keeps_a_path_prefix():
    c = configuration.parse(config_with(keystone__url="https://cloud.example/identity/v3/"))
    assert c.keystone.url == "https://cloud.example/identity"


@pytest.mark.parametrize("url", ["http://g:9292/", "http://g:9292//"])
def test_upstream_trailing_slashes_are_dropped(url):
    assert configuration.parse(config_with(gateway__upstream=url)).gateway.upstream == "http://g:9292"


def schema_keys(model: type[BaseModel] = Config, prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            keys |= schema_keys(kind, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def example_keys() -> set[str]:
    """Every key config.toml sets or shows commented out, as section.key."""
    keys, section = set(), ""
    for line in (REPO / "config.toml").read_text().splitlines():
        if m := re.match(r"\[([\w.]+)\]", line):
            section = m[1]
        elif m := re.match(r"#?\s*(\w+)\s*=", line):
            keys.add(f"{section}.{m[1]}")
        elif section == "quota.projects" and re.match(r'#?\s*"', line):
            keys.add(section)
    return keys


def readme_keys() -> set[str]:
    """Every key in README's key tables (`| key | default | meaning |`); a row
    may name several keys of one section: `keystone.username`, `password`."""
    keys, in_table = set(), False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("| key | default | meaning |"):
            in_table = True
        elif in_table and line.startswith("| `"):
            names = re.findall(r"`([^`]+)`", line.split("|")[1])
            section = names[0].rsplit(".", 1)[0]
            for name in names:
                key = name if "." in name else f"{section}.{name}"
                keys.add(re.sub(r'\."[^"]*"$', "", key))  # quota.projects."<project-id>"
        elif not line.startswith("|"):
            in_table = False
    return keys - {"identity.*"}


def test_example_config_keys_exist_in_the_schema():
    assert example_keys() - schema_keys() == set()
    assert "quota.projects" in example_keys()


def test_readme_documents_exactly_the_schema():
    assert readme_keys() - schema_keys() == set()
    assert schema_keys() - readme_keys() == set()


@pytest.fixture(scope="module")
def pems(tmp_path_factory) -> dict[str, str]:
    import trustme
    tmp = tmp_path_factory.mktemp("pems")
    ca, other = trustme.CA(), trustme.CA()
    files = {"ca": tmp / "ca.pem", "chain": tmp / "chain.pem", "key": tmp / "key.pem", "other_key": tmp / "other.pem"}
    ca.cert_pem.write_to_path(files["ca"])
    leaf = ca.issue_cert("gw.example")
    leaf.private_key_pem.write_to_path(files["key"])
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(files["chain"], append=True)
    other.issue_cert("gw.example").private_key_pem.write_to_path(files["other_key"])
    return {name: str(path) for name, path in files.items()}


def test_tls_files_load(pems):
    c = configuration.parse(config_with(gateway__upstream="https://g:9292", gateway__upstream_ca_file=pems["ca"],
                                        gateway__tls_cert_file=pems["chain"], gateway__tls_key_file=pems["key"],
                                        gateway__upstream_client_cert_file=pems["chain"],
                                        gateway__upstream_client_key_file=pems["key"],
                                        keystone__url="https://k:5000", keystone__ca_file=pems["ca"]))
    assert (c.gateway.tls_cert_file, c.keystone.ca_file) == (pems["chain"], pems["ca"])


@pytest.mark.parametrize("key", ["tls", "upstream_client"])
def test_a_key_that_is_not_the_certificates_is_refused(pems, key):
    assert error(config_with(gateway__upstream="https://g:9292", **{f"gateway__{key}_cert_file": pems["chain"],
                                                                    f"gateway__{key}_key_file": pems["other_key"]})
                 ).startswith(f"gateway.{key}_cert_file: does not load: KEY_VALUES_MISMATCH")


def test_the_password_from_a_file_or_the_environment(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    c = configuration.parse(config_with(keystone__password=None, keystone__password_file=str(secret)))
    assert c.keystone.secret == "s3cret"  # the trailing newline is not part of it
    assert "s3cret" not in repr(c)
    monkeypatch.setenv("GLANCE_GATE_KEYSTONE_PASSWORD", "from-env")
    assert configuration.parse(config_with(keystone__password=None)).keystone.secret == "from-env"
    # two ways at once: which one would the gateway use?
    assert error(config_with()) == (
        "keystone.password: set exactly one of keystone.password, keystone.password_file, "
        "GLANCE_GATE_KEYSTONE_PASSWORD or keystone.application_credential_id, "
        "got keystone.password, GLANCE_GATE_KEYSTONE_PASSWORD")


def test_an_application_credential_instead_of_a_user(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("app-secret")
    app = dict(keystone__password=None, keystone__username=None, keystone__project=None,
               keystone__application_credential_id="ac1", keystone__application_credential_secret_file=str(secret))
    assert configuration.parse(config_with(**app)).keystone.secret == "app-secret"
    assert error(config_with(**{**app, "keystone__password": "p"})).endswith(
        "got keystone.password, keystone.application_credential_id")
    assert error(config_with(**{**app, "keystone__username": "gw"})) == (
        "keystone.username: must be unset with application_credential_id")
    no_secret = {k: v for k, v in app.items() if k != "keystone__application_credential_secret_file"}
    assert error(config_with(**no_secret)) == (
        "keystone.application_credential_secret_file: required with application_credential_id")
    secret.write_text("")
    assert error(config_with(**app)) == "keystone.application_credential_secret_file: is empty"
