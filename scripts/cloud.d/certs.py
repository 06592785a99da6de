"""The cloud-in-a-box's TLS material, made at run time with trustme (never
committed): `python certs.py DIR` writes, unless DIR/ca.pem exists,

  ca.pem                       the cloud's root CA (what clients trust)
  server.pem, server.key       127.0.0.1/localhost, issued by an intermediate;
                               server.pem holds the chain (Keystone, Glance, the gateway)
  client.pem, client.key       a client certificate of the same CA (mutual TLS)
  other-ca.pem, other.pem/.key 127.0.0.1 from another CA
  expired.pem/.key             127.0.0.1 from the cloud's CA, expired yesterday
  wrong-name.pem/.key          the cloud's CA, for glance.invalid only
"""

import datetime
import sys
from pathlib import Path

import trustme

NAMES = ("127.0.0.1", "localhost")


def write(leaf: trustme.LeafCert, directory: Path, name: str) -> None:
    leaf.private_key_pem.write_to_path(directory / f"{name}.key")
    (directory / f"{name}.key").chmod(0o600)
    chain = directory / f"{name}.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))


def main(directory: Path) -> None:
    if (directory / "ca.pem").exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    root = trustme.CA(organization_name="glance-gate cloud-in-a-box")
    intermediate = root.create_child_ca()
    write(intermediate.issue_cert(*NAMES), directory, "server")
    write(root.issue_cert("glance-gate"), directory, "client")
    other = trustme.CA(organization_name="another CA")
    other.cert_pem.write_to_path(directory / "other-ca.pem")
    write(other.issue_cert(*NAMES), directory, "other")
    now = datetime.datetime.now(datetime.timezone.utc)
    write(root.issue_cert(*NAMES, not_before=now - datetime.timedelta(days=30),
                          not_after=now - datetime.timedelta(days=1)), directory, "expired")
    write(root.issue_cert("glance.invalid"), directory, "wrong-name")
    root.cert_pem.write_to_path(directory / "ca.pem.partial")
    (directory / "ca.pem.partial").replace(directory / "ca.pem")  # last: the set is complete


if __name__ == "__main__":
    main(Path(sys.argv[1]))
