"""What ``/v1/proxy/{service}/…`` adds over calling the provider's API directly.

``python bench/vault_proxy.py [--n 300]`` (from the repository root; needs npm for the test OpenID provider)

Starts the real oidc-provider (1-hour access tokens, so no refresh happens), a gateway on SQLite with a service
whose ``api_base`` is the provider's stand-in API, seeds the vault through the provider's code flow, then times
``--n`` sequential ``GET /api/profile`` calls made directly with the access token and the same number made through
the gateway with the app's key and the user's identity token (both verified, the quota charged, the row unsealed,
the path checked, the answer streamed back). Prints the median and 95th percentile of each and their difference.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from gateway.vault.setup import VAULT
from tests.support.databases import Backend
from tests.support.oidc import run_oidc_provider
from tests.vault.conftest import SERVICE, MovableClock, Outbound, connect, gateways, new_caller


async def timed(http: aiohttp.ClientSession, url: str, headers: dict[str, str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        async with http.get(url, headers=headers) as response:
            await response.read()
            assert response.status == 200, response.status
        out.append(time.perf_counter() - start)
    return out


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.95)] * 1000


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Backend("sqlite", Path(tmp))
        async with run_oidc_provider(access_token_ttl=3600) as idp:
            async with (
                gateways(db, idp, MovableClock(), Outbound(), plan="unlimited") as [gw],
                aiohttp.ClientSession() as http,
            ):
                caller = await new_caller(gw)
                await connect(gw, idp, caller.user_id)
                connection = await gw.app[VAULT].vault.connection(caller.user_id, SERVICE)
                assert connection is not None
                direct_headers = {"Authorization": f"Bearer {connection.tokens.access_token}"}
                proxied_url = f"{gw.url}/v1/proxy/{SERVICE}/profile"
                await timed(http, idp.profile_url, direct_headers, 20)  # warm up both paths
                await timed(http, proxied_url, caller.headers(), 20)
                direct = await timed(http, idp.profile_url, direct_headers, n)
                proxied = await timed(http, proxied_url, caller.headers(), n)
        await db.close()
    (d50, d95), (p50, p95) = summary(direct), summary(proxied)
    print(f"direct   median {d50:.2f} ms  p95 {d95:.2f} ms  (n={n})")
    print(f"proxied  median {p50:.2f} ms  p95 {p95:.2f} ms")
    print(f"added    median {p50 - d50:.2f} ms  p95 {p95 - d95:.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300)
    asyncio.run(main(parser.parse_args().n))
