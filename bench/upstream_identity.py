"""The upstream identity JWT's cost per request: a cached token (the usual case) against signing one each time.

Run ``python bench/upstream_identity.py [--count 20000]`` from the repository root. In process, SQLite in a
temporary directory holds the signing key; ``UpstreamIdentity.token_for`` is timed for one credential (every call
after the first is a cache hit) and for a fresh credential per call (every call signs: what the gateway would pay
without the cache). Prints µs per call and how many signatures each loop made.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from gateway.clock import SystemClock
from gateway.config import parse_config
from gateway.credentials.principal import Principal
from gateway.identity.sealing import generate_secret
from gateway.identity.upstream import UpstreamIdentity
from gateway.identity.web import identity_services
from gateway.storage import open_storage


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(f"sqlite:///{Path(tmp) / 'bench.db'}")
        await storage.open()
        try:
            await storage.migrate()
            clock = SystemClock()
            config = parse_config({"identity": {"encryption_keys": generate_secret("k1")}})
            keys = identity_services(config, storage, clock).keys
            identity = UpstreamIdentity(
                keys, clock, issuer="https://gw", audience="http://up", default_scopes=("mcp:tools",)
            )
            one = Principal(user_id="usr_1", email="a@example.com", method="api_key", credential_id="key_1")
            await identity.token_for(one)  # the key is created and unsealed
            for label, principal_of in (
                ("cached (one credential)", lambda i: one),
                ("signed (a new credential each call)", lambda i: Principal("usr_1", "a@x", "api_key", f"k{i}")),
            ):
                before = identity.signed
                start = time.perf_counter()
                for i in range(count):
                    await identity.token_for(principal_of(i))
                elapsed = time.perf_counter() - start
                print(f"{label:40} {elapsed / count * 1e6:8.2f} µs/call  signatures: {identity.signed - before}")
        finally:
            await storage.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20000)
    asyncio.run(main(parser.parse_args().count))
