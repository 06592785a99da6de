"""Time to an identity decision, side by side, against the cloud-in-a-box.

    .venv/bin/python bench/identity.py [--tokens 30]

Runs the gateway's own validator front (policy.identity.TokenValidator: header
checks, TLRU cache, then the mode's checker) in-process against the real
Keystones of `CLOUD_IDENTITY=1 scripts/cloud up`:

- keystone cold: a fresh Fernet token each time, validated online (GET /v3/auth/tokens);
- keystone warm: the same token again, answered by the cache;
- keystone-jws offline: a fresh JWS token each time, signature and claims checked locally;
- keystone-jws confirm cold: a fresh JWS token, the offline check then Keystone (JWS).

Tokens are issued before timing starts. Prints median and p90 in ms and writes
bench/results/identity-latest.json. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy.config import IdentityConf, Keystone  # noqa: E402
from policy.identity import KeystoneClient, TokenCache, TokenValidator  # noqa: E402
from policy.identity.jws import ConfirmedJws, JwsVerifier, load_public_keys  # noqa: E402
from tests.support.stack import REPO, Stack, load_cloud, load_identity_cloud  # noqa: E402


def keystone_conf(url: str, gw: dict) -> Keystone:
    return Keystone(url=url, username=gw["username"], password=gw["password"], project=gw["project"],
                    user_domain="Default", project_domain="Default", cache_seconds=300, timeout_seconds=10)


async def timed(validator: TokenValidator, tokens: list[str]) -> list[float]:
    out = []
    for token in tokens:
        t0 = time.perf_counter()
        await validator.validate([token])
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def main(n: int) -> dict:
    cloud, ident = load_cloud(), load_identity_cloud()
    fernet = Stack(cloud)
    jws = Stack({**cloud, "keystone_url": ident["keystone_jws_url"] + "/v3"})
    gw = fernet.user("gateway")
    online = KeystoneClient(keystone_conf(fernet.keystone, gw))
    online_jws = KeystoneClient(keystone_conf(jws.keystone, gw))
    await online.service_token(), await online_jws.service_token()  # log in before timing
    offline = JwsVerifier(IdentityConf(mode="keystone-jws", jws_public_keys=ident["jws_public_keys"]),
                          load_public_keys(ident["jws_public_keys"]))

    fernet_tokens = [fernet.new_token("userA") for _ in range(n)]
    jws_tokens = [jws.new_token("userA") for _ in range(2 * n)]
    cache = TokenCache(300)
    runs = {
        "keystone cold (online)": await timed(TokenValidator(online, cache), fernet_tokens),
        "keystone warm (cache hit)": await timed(TokenValidator(online, cache), fernet_tokens),
        "keystone-jws offline": await timed(TokenValidator(offline, TokenCache(300)), jws_tokens[:n]),
        "keystone-jws confirm cold": await timed(TokenValidator(ConfirmedJws(offline, online_jws),
                                                                TokenCache(300)), jws_tokens[n:]),
    }
    return {name: {"median_ms": round(statistics.median(ms), 3),
                   "p90_ms": round(statistics.quantiles(ms, n=10)[-1], 3), "n": len(ms)}
            for name, ms in runs.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=30)
    args = parser.parse_args()
    results = asyncio.run(main(args.tokens))
    print(f"{'time to an identity decision':32} {'median ms':>10} {'p90 ms':>10}")
    for name, r in results.items():
        print(f"{name:32} {r['median_ms']:>10.3f} {r['p90_ms']:>10.3f}")
    out = REPO / "bench" / "results" / "identity-latest.json"
    out.write_text(json.dumps({"machine": platform.platform(), "results": results}, indent=2) + "\n")
