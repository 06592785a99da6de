"""A corpus of hostile or odd upload requests, against real Glance.

Every case aims at a queued image of projB with 2 KiB of data, while the gateway
gives projB a 1 KiB quota: the full upload policy refuses it (413), and Glance
on its own would accept it. So for each case the gateway must answer with a
4xx (or close the connection), and the image must still be queued with no data
at Glance: anything that reached Glance as an upload, unpoliced, would have
made it active."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest

from policy import decision as rules
from tests.support.stack import connect, start_gateway, stop

BODY = b"\x00" * 2048
QUOTA = 1024
OCTET = "application/octet-stream"


@dataclass
class Case:
    name: str
    method: str = "PUT"
    target: str = "/v2/images/{id}/file"
    version: str = "HTTP/1.1"
    headers: list[tuple[str, str]] = field(default_factory=list)
    replace: dict[str, str | None] = field(default_factory=dict)  # default headers to change or drop
    body: bytes | None = None  # None: BODY with its Content-Length
    raw: bytes | None = None  # the whole request, verbatim ({id}, {token} filled in)

    def bytes(self, image_id: str, token: str, host: str) -> bytes:
        if self.raw is not None:
            return self.raw.replace(b"{id}", image_id.encode()).replace(b"{token}", token.encode())
        body = BODY if self.body is None else self.body
        defaults = {"Host": host, "X-Auth-Token": token, "Content-Type": OCTET,
                    "Content-Length": str(len(body)), "Connection": "close"}
        defaults.update(self.replace)
        lines = [f"{self.method} {self.target.format(id=image_id)} {self.version}"]
        lines += [f"{k}: {v}" for k, v in defaults.items() if v is not None]
        lines += [f"{k}: {v}" for k, v in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(data: bytes, size: int = 500) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size])
                    for i in range(0, len(data), size)) + b"0\r\n\r\n"


def path_cases() -> list[Case]:
    spellings = [
        "/v2/images/{id}/file", "//v2/images/{id}/file", "/v2//images/{id}/file", "/v2/images//{id}/file",
        "/v2/images/{id}//file", "///v2///images///{id}///file", "/v2/./images/{id}/file", "/./v2/images/{id}/file",
        "/v2/images/./{id}/file", "/v2/images/{id}/./file", "/v2/foo/../images/{id}/file",
        "/v2/images/{id}/x/../file", "/x/../v2/images/{id}/file", "/v2/images/x/../{id}/file",
        "/v2/images/{id}/file/", "/v2/images/{id}/file//", "/v2/images/{id}/file?", "/v2/images/{id}/file?a=b",
        "/v2/images/{id}/file?x=/../", "/v2/images/{id}/file;p", "/v2/images/{id}/file;p=1?q",
        "/v2/images/{id}%2Ffile", "/v2/images%2F{id}%2Ffile", "/v2%2Fimages%2F{id}%2Ffile", "/v2/images/{id}%2ffile",
        "/v2/images/{id}/%66ile", "/v2/images/{id}/fil%65", "/v2/images/{id}/%66%69%6c%65", "/v2/images/{id}/%46ILE",
        "/%76%32/images/{id}/file", "/v2/%69mages/{id}/file", "/v2/images/{id}/%2e/file",
        "/v2/images/%2e/{id}/file", "/v2/images/{id}/file%2F", "/v2/images/{id}/file%3Fx", "/v2/images/{id}/file%23x",
        "/v2/images/{id}/file%3Bp", "/V2/images/{id}/file", "/v2/IMAGES/{id}/file", "/v2/images/{id}/FILE",
        "/v2/images/{id}/File", "/v2/images/{id}%252Ffile", "/v2/images/{id}/%2566ile", "/v2/images/{id}/file%20",
        "/v2/images/{id}/file%00", "/v2/images/{id}/file%0a", "/v2/images/{id}/file/.", "/v2/images/{id}/file/x/..",
        "/v2/images/{id}/file.json", "/v2/images/{id}/file%2e", "/v2/images/{id}%2F%2E%2Ffile",
        "/v2.0/images/{id}/file", "/v2.1/images/{id}/file", "/v2.9/images/{id}/file", "/v2.17/images/{id}/file",
        "/v2.18/images/{id}/file", "/v2.99/images/{id}/file", "/V2.1/images/{id}/file", "/v2.1//images/{id}/file",
        "/v2%2E1/images/{id}/file", "/v3/images/{id}/file", "/images/{id}/file", "/v1/images/{id}/file",
        "/v2/images/{id}/stage", "/v2/images/{id}/stage/", "/v2/images/{id}/%73tage", "/v2/images/{id}/STAGE",
        "/v2.1/images/{id}/stage", "/v2/images/{id}%2Fstage", "//v2/images/{id}/stage",
        "/v2\\images\\{id}\\file", "/v2/images/{id}\\file", "/v2/images/{id}/file#frag",
        "/v2/images/{id}/file?%2F..%2F", "/v2/images/{id}/file%3F%2F",
    ]
    return [Case(f"path {s}", target=s) for s in spellings]


def negotiation_cases() -> list[Case]:
    cases = []
    for accept in ["application/vnd.openstack.images-v2", "application/vnd.openstack.images-v2.1",
                   "application/vnd.openstack.images-v2.18", "application/vnd.openstack.images-v2.99",
                   "application/vnd.openstack.images-v3", "application/vnd.openstack.images-v2+json"]:
        for target in ["/images/{id}/file", "/images/{id}/stage", "/v2/images/{id}/file", "/x/images/{id}/file"]:
            cases.append(Case(f"accept {accept} {target}", target=target, headers=[("Accept", accept)]))
    cases.append(Case("two accept headers", target="/images/{id}/file",
                      headers=[("Accept", "application/vnd.openstack.images-v2"), ("Accept", "*/*")]))
    # Glance reads WebOb's normalised Accept (no q=1, no empty items), and the
    # path's version when the value is invalid
    vnd = "application/vnd.openstack.images-v2"
    cases += [Case(f"normalised accept {a!r} {t}", target=t, headers=[("Accept", a)]) for a, t in [
        (f"{vnd};q=1", "/images/{id}/file"), (f"{vnd} ; q=1.000", "/images/{id}/file"),
        (f"{vnd},", "/images/{id}/file"), (f", ,{vnd}", "/images/{id}/file"), (f"{vnd}.9;Q=1", "/images/{id}/stage"),
        (f"{vnd};q=2", "/v2/images/{id}/file")]]
    cases.append(Case("accept split over two headers", target="/images/{id}/file",
                      headers=[("Accept", vnd), ("Accept", ",")]))
    return cases


def target_cases() -> list[Case]:
    return [Case(f"target {t}", target=t) for t in [
        "http://127.0.0.1/v2/images/{id}/file", "http://evil.example/v2/images/{id}/file",
        "HTTP://127.0.0.1/v2/images/{id}/file", "http://127.0.0.1/v2/images/{id}%2Ffile",
        "http://127.0.0.1:9292/v2.1/images/{id}/file", "https://127.0.0.1/v2/images/{id}/file",
        "http://user:pw@127.0.0.1/v2/images/{id}/file", "*", "v2/images/{id}/file",
    ]] + [Case(f"header {k}", headers=[(k, v)]) for k, v in [
        ("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-For", "10.0.0.1"),
        ("X-Forwarded-Prefix", "/v2/images"), ("Forwarded", "for=1.2.3.4;host=evil"),
        ("X-Original-URL", "/v2/images"), ("X-Rewrite-URL", "/v2/images"),
    ]] + [Case("host evil", replace={"Host": "evil.example"}), Case("no host", replace={"Host": None}),
          Case("two hosts", headers=[("Host", "evil.example")]),
          Case("benign path, original-url upload", target="/v2/images",
               headers=[("X-Original-URL", "/v2/images/{id}/file")])] + [
        # gunicorn takes SCRIPT_NAME from a proxy it trusts (the gateway) off PATH_INFO
        Case(f"environ header {k}: {v}", target=v + "/v2/images/{id}/file", headers=[(k, v)])
        for k, v in [("SCRIPT_NAME", "/x"), ("Script_Name", "/x"), ("SCRIPT_NAME", "/v2"), ("SCRIPT_NAME", "/images")]]


def framing_cases() -> list[Case]:
    te = [("Transfer-Encoding", "chunked")]
    return [
        Case("chunked", replace={"Content-Length": None}, headers=te, body=chunked(BODY)),
        Case("chunked one chunk", replace={"Content-Length": None}, headers=te, body=chunked(BODY, 4096)),
        Case("chunked with extensions", replace={"Content-Length": None}, headers=te,
             body=b"800;ext=1\r\n" + BODY + b"\r\n0\r\n\r\n"),
        Case("chunked with trailers", replace={"Content-Length": None}, headers=te,
             body=chunked(BODY)[:-2] + b"X-Trailer: 1\r\n\r\n"),
        Case("content-length and chunked", headers=te, body=chunked(BODY)),
        Case("content-length 0 and chunked", replace={"Content-Length": "0"}, headers=te, body=chunked(BODY)),
        Case("two equal content-lengths", headers=[("Content-Length", str(len(BODY)))]),
        Case("two different content-lengths", headers=[("Content-Length", "10")]),
        Case("content-length list", replace={"Content-Length": f"{len(BODY)}, {len(BODY)}"}),
        Case("content-length +", replace={"Content-Length": f"+{len(BODY)}"}),
        Case("content-length hex", replace={"Content-Length": hex(len(BODY))}),
        Case("content-length negative", replace={"Content-Length": "-1"}),
        Case("content-length spaces", replace={"Content-Length": f" {len(BODY)} "}),
        Case("content-length huge", replace={"Content-Length": "9" * 30}),
        Case("content-length 1 short of body", replace={"Content-Length": str(len(BODY) - 1)}),
        Case("body shorter than declared", replace={"Content-Length": str(len(BODY) * 2)}),
        Case("te chunked, identity", replace={"Content-Length": None},
             headers=[("Transfer-Encoding", "chunked, identity")], body=chunked(BODY)),
        Case("te identity, chunked", replace={"Content-Length": None},
             headers=[("Transfer-Encoding", "identity, chunked")], body=chunked(BODY)),
        Case("te gzip, chunked", replace={"Content-Length": None},
             headers=[("Transfer-Encoding", "gzip, chunked")], body=chunked(BODY)),
        Case("te Chunked", replace={"Content-Length": None},
             headers=[("Transfer-Encoding", "Chunked")], body=chunked(BODY)),
        Case("te xchunked", replace={"Content-Length": None},
             headers=[("Transfer-Encoding", "xchunked")], body=chunked(BODY)),
        Case("te chunked twice", replace={"Content-Length": None},
             headers=te + te, body=chunked(BODY)),
        Case("te with tab", replace={"Content-Length": None},
             headers=[("Transfer-Encoding", "\tchunked")], body=chunked(BODY)),
        Case("te identity only", headers=[("Transfer-Encoding", "identity")]),
        Case("te space before colon", raw=b"PUT /v2/images/{id}/file HTTP/1.1\r\nHost: g\r\nX-Auth-Token: {token}\r\n"
             b"Content-Type: application/octet-stream\r\nTransfer-Encoding : chunked\r\nConnection: close\r\n\r\n"
             + chunked(BODY)),
        Case("obs-fold token", raw=b"PUT /v2/images/{id}/file HTTP/1.1\r\nHost: g\r\nX-Auth-Token:\r\n {token}\r\n"
             b"Content-Type: application/octet-stream\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n" + BODY),
        Case("obs-fold content-type", raw=b"PUT /v2/images/{id}/file HTTP/1.1\r\nHost: g\r\nX-Auth-Token: {token}\r\n"
             b"Content-Type: application/\r\n octet-stream\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n" + BODY),
        Case("bare LF line endings", raw=b"PUT /v2/images/{id}/file HTTP/1.1\nHost: g\nX-Auth-Token: {token}\n"
             b"Content-Type: application/octet-stream\nContent-Length: 2048\nConnection: close\n\n" + BODY),
        Case("header without value", headers=[("X-Empty", "")]),
        Case("huge header", headers=[("X-Big", "a" * 60_000)]),
        Case("many headers", headers=[(f"X-H{i}", "v") for i in range(500)]),
        Case("header name with space", raw=b"PUT /v2/images/{id}/file HTTP/1.1\r\nHost: g\r\nX-Auth-Token: {token}\r\n"
             b"Content Type: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 2048\r\n"
             b"Connection: close\r\n\r\n" + BODY),
        Case("NUL in header", headers=[("X-Nul", "a\x00b")]),
        Case("expect 100-continue", headers=[("Expect", "100-continue")]),
        Case("expect odd", headers=[("Expect", "100-Continue, foo")]),
        Case("content-encoding gzip", headers=[("Content-Encoding", "gzip")]),
        Case("no content-length, no te", replace={"Content-Length": None}),
        Case("keep-alive", replace={"Connection": "keep-alive"}),
        Case("x-openstack-image-size tiny", headers=[("x-openstack-image-size", "1")]),
    ]


def pipelined_cases() -> list[Case]:
    def two(first: bytes) -> bytes:
        return first + (b"PUT /v2/images/{id}/file HTTP/1.1\r\nHost: g\r\nX-Auth-Token: {token}\r\n"
                        b"Content-Type: application/octet-stream\r\nContent-Length: 2048\r\n"
                        b"Connection: close\r\n\r\n" + BODY)
    return [
        Case("after a GET", raw=two(b"GET /v2/images HTTP/1.1\r\nHost: g\r\nX-Auth-Token: {token}\r\n\r\n")),
        Case("after a GET with a body", raw=two(b"GET /v2/images HTTP/1.1\r\nHost: g\r\nX-Auth-Token: {token}\r\n"
                                                  b"Content-Length: 5\r\n\r\nhello")),
        Case("smuggled in a short upload's body", raw=two(
            b"PUT /v2/images/{id}/file HTTP/1.1\r\nHost: g\r\nX-Auth-Token: {token}\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 0\r\n\r\n")),
        Case("smuggled after CL+TE", raw=two(
            b"POST /v2/images HTTP/1.1\r\nHost: g\r\nX-Auth-Token: {token}\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
        Case("smuggled after TE.CL", raw=two(
            b"POST /v2/images HTTP/1.1\r\nHost: g\r\nX-Auth-Token: {token}\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nContent-Length: 100\r\n\r\n0\r\n\r\n")),
    ]


def method_cases() -> list[Case]:
    cases = [Case(f"method {m}", method=m) for m in ["POST", "PATCH", "DELETE", "GET", "HEAD", "OPTIONS", "put",
                                                        "Put", "PUT ", "PROPFIND", "COPY", "MOVE"]]
    cases += [Case(f"override {h}", method="POST", headers=[(h, "PUT")]) for h in
              ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X-HTTP-Method-Override "]]
    cases += [Case(f"{m} ?{q}", method=m, target="/v2/images/{id}/file?" + q) for m, q in [
        ("POST", "_method=PUT"), ("POST", "_method=put"), ("GET", "_method=PUT"), ("PATCH", "_method=PUT"),
        ("POST", "x=1&_method=PUT"), ("POST", "_method=GET&_method=PUT"), ("POST", "%5Fmethod=PUT"),
        ("PUT", "_method=GET"), ("DELETE", "_method=PUT"),
        # WebOb splits a query on `;` as well as `&`
        ("POST", "x;_method=PUT"), ("POST", "_method=PUT;x"), ("GET", ";;_method=put;;"),
        ("POST", "_method=x&%5Fmethod=PUT"), ("POST", "x;_method=%50UT")]]
    cases += [Case("POST ?x;_method=PUT to stage", method="POST", target="/v2/images/{id}/stage?x;_method=PUT")]
    cases += [Case("POST ?_method=PUT to stage", method="POST", target="/v2/images/{id}/stage?_method=PUT"),
              Case("form POST _method=PUT", method="POST", replace={"Content-Type": "application/x-www-form-urlencoded"},
                   body=b"_method=PUT&" + BODY.replace(b"\x00", b"a")),
              Case("multipart POST _method=PUT", method="POST",
                   replace={"Content-Type": "multipart/form-data; boundary=b"},
                   body=b'--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n--b--\r\n')]
    return cases


def identity_cases() -> list[Case]:
    forged = [("X-Roles", "admin"), ("X-Role", "admin"), ("X-Project-Id", "{owner}"), ("X-Tenant-Id", "{owner}"),
              ("X-Identity-Status", "Confirmed"), ("X-User-Id", "admin"), ("X-Is-Admin-Project", "True"),
              ("X-Service-Token", "{token}"), ("X-Service-Roles", "admin"), ("OpenStack-System-Scope", "all"),
              ("X-Auth-Token ", "{token}"), ("X-Subject-Token", "{token}"), ("X-Storage-Token", "{token}")]
    cases = [Case(f"forged {k}", headers=[(k, v)]) for k, v in forged]
    cases += [
        Case("token with spaces", replace={"X-Auth-Token": "  {token}  "}),
        Case("two tokens", headers=[("X-Auth-Token", "{token}")]),
        Case("two tokens, second forged", headers=[("X-Auth-Token", "forged")]),
        Case("token lowercase header", replace={"X-Auth-Token": None}, headers=[("x-auth-token", "{token}")]),
        Case("no token, admin roles forged", replace={"X-Auth-Token": None},
             headers=[("X-Roles", "admin"), ("X-Identity-Status", "Confirmed")]),
    ]
    return cases


def version_cases() -> list[Case]:
    return [
        Case("HTTP/1.0", version="HTTP/1.0"),
        Case("HTTP/1.2", version="HTTP/1.2"),
        Case("HTTP/2.0 request line", version="HTTP/2.0"),
        Case("HTTP/0.9", raw=b"PUT /v2/images/{id}/file\r\n\r\n" + BODY),
        Case("h2c prior knowledge", raw=b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
        Case("upgrade h2c", headers=[("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")],
             replace={"Connection": "Upgrade, HTTP2-Settings, close"}),
        Case("upgrade websocket", headers=[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                                           ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")],
             replace={"Connection": "Upgrade"}),
        Case("TLS client hello", raw=bytes.fromhex("160301002e0100002a0303") + b"\x00" * 32 + b"\x00\x00\x02\x00\x2f\x01\x00"),
    ]


CORPUS = (path_cases() + negotiation_cases() + target_cases() + framing_cases() + pipelined_cases()
          + method_cases() + identity_cases() + version_cases())


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 200
    assert len({c.name for c in CORPUS}) == len(CORPUS)


@pytest.fixture(scope="module")
def hostile_gateway(stack, tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("hostile"), stack,
                       quota={stack.user("userB")["project_id"]: QUOTA})
    yield gw
    stop(gw.proc)


def exchange(url: str, data: bytes) -> bytes:
    """Sends the request and reads until the gateway closes (or 10 s pass)."""
    reply = b""
    with connect(url) as sock:
        sock.settimeout(10)
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                reply += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
        except socket.timeout:
            reply += b"<timeout>"
    return reply


def statuses(reply: bytes) -> list[int]:
    return [int(line.split(b" ")[1]) for line in reply.split(b"\r\n")
            if line.startswith(b"HTTP/1.") and len(line.split(b" ")) > 1 and line.split(b" ")[1].isdigit()]


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_hostile_request_is_refused_or_policed(stack, hostile_gateway, case):
    image_id = stack.create_image(user="userB")
    owner = stack.user("userB")["project_id"]
    host = urlsplit(hostile_gateway.url).netloc
    data = case.bytes(image_id, stack.token("userB"), host).replace(b"{owner}", owner.encode())
    reply = exchange(hostile_gateway.url, data)
    codes = [c for c in statuses(reply) if c != 100]
    # A clear answer: a status (or, for what is not HTTP/1 at all, a closed
    # connection); a 5xx only as the policy's own refusal of an empty body.
    assert codes or case.raw is not None, reply[:500]
    assert all(c < 500 or b'"message": "The image data is empty' in reply for c in codes), reply[:500]
    if case.method == "PUT" and case.raw is None:
        assert all(c >= 300 for c in codes), reply[:500]  # refused, or Glance's version list
    stack.assert_untouched(image_id, cut=True)
    stack.delete_image(image_id, user="userB")


@pytest.mark.parametrize("method, target, headers, body", [
    ("POST", "/v2/images/{id}/file", {"Content-Type": "application/x-www-form-urlencoded"}, b"_method=PUT&x=" + BODY),
    ("PUT", "/v2/images/{id}/file/", {"Content-Type": OCTET}, BODY),
    ("PUT", "/v2/images/{id}/FILE", {"Content-Type": OCTET}, BODY),
    ("PUT", "/images/{id}/file", {"Content-Type": OCTET, "Accept": "application/vnd.openstack.images-V2"}, BODY),
], ids=["form POST", "trailing slash", "FILE", "Accept V2"])
def test_ambiguous_request_is_refused_in_glances_shape(stack, hostile_gateway, method, target, headers, body):
    """Where Glance and a lenient WSGI stack may route a request differently,
    or a form's body may name the method: 400 `ambiguous`, nothing forwarded."""
    image_id = stack.create_image(user="userB")
    with httpx.Client(base_url=hostile_gateway.url, timeout=30) as client:
        r = client.request(method, target.format(id=image_id), content=body,
                           headers={**headers, "X-Auth-Token": stack.token("userB")})
    assert r.status_code == 400, r.text
    assert r.json() == {"code": 400, "title": "Bad Request", "message": rules.ambiguous().message}
    assert r.headers["x-openstack-request-id"].startswith("req-")
    stack.assert_untouched(image_id)
    stack.delete_image(image_id, user="userB")
