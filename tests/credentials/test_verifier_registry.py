"""A credential type is one ``CredentialVerifier`` in the authenticator's list: a tiny test-only type registered
next to the real ones authenticates its own credentials, is refused through the same 401 challenge and metric,
and is re-checked for open streams, while the real types keep their own credentials."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from aiohttp.web import Request

from gateway.apikeys import ApiKeyFormat
from gateway.clock import ManualClock
from gateway.credentials import (
    Authenticator,
    Challenge,
    Presented,
    Principal,
    Refusal,
    ValidationCache,
    Verified,
    Watermark,
)
from gateway.credentials.api_keys import ApiKeyVerifier
from gateway.credentials.oauth_tokens import AccessTokenVerifier
from gateway.credentials.verifier import CredentialVerifier
from gateway.errors import InvalidToken
from gateway.last_used import LastUsedRecorder
from gateway.metrics import Metrics

DEMO = Principal(user_id="u-demo", email="demo@example.com", method="api_key", credential_id="demo-1")


class DemoVerifier:
    """``demo_<name>`` credentials, valid for ``demo_alice`` only; ``demo_`` alone is malformed."""

    kind = "demo"

    def __init__(self) -> None:
        self.verified: list[str] = []
        self.used: list[str] = []
        self.valid = True

    def matches(self, raw: str) -> bool:
        return raw.startswith("demo_")

    def refuse_early(self, presented: Presented) -> Refusal | None:
        return Refusal("malformed", "The demo credential is malformed") if presented.raw == "demo_" else None

    async def verify(self, presented: Presented) -> Verified | Refusal:
        self.verified.append(presented.raw)
        if presented.raw == "demo_alice" and self.valid:
            return Verified(DEMO, None)
        return Refusal("unknown")

    def record_use(self, principal: Principal, now: float) -> None:
        self.used.append(principal.credential_id)


class NoStorage:
    """Stores the real verifiers must not touch in these tests."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"storage looked up: {name}")


async def _nothing(batch: object) -> None:
    return None


@pytest.fixture
def demo() -> DemoVerifier:
    return DemoVerifier()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def authn(demo: DemoVerifier, metrics: Metrics) -> Authenticator:
    clock, storage, recorder = ManualClock(), NoStorage(), LastUsedRecorder(_nothing, interval=60, name="test")
    verifiers: list[CredentialVerifier] = [
        AccessTokenVerifier(grants=storage, users=storage, resource="https://gw.example/mcp", grant_use=recorder),  # type: ignore[arg-type]
        ApiKeyVerifier(ApiKeyFormat("mgw"), keys=storage, users=storage, key_use=recorder),  # type: ignore[arg-type]
        demo,
    ]
    return Authenticator(
        verifiers,
        cache=ValidationCache(clock, Watermark(storage, clock, interval=0.5)),  # type: ignore[arg-type]
        clock=clock,
        challenge=Challenge("https://gw.example/.well-known/oauth-protected-resource/mcp", "mcp:tools"),
        required_scopes=("mcp:tools",),
        metrics=metrics,
    )


def bearer(credential: str) -> Request:
    return make_mocked_request("POST", "/mcp", headers={"Authorization": f"Bearer {credential}"})


def failures(metrics: Metrics, reason: str) -> float:
    return metrics.registry.get_sample_value("gateway_auth_failures_total", {"reason": reason}) or 0.0


async def test_a_registered_verifier_authenticates_its_own_credentials_and_records_their_use(
    authn: Authenticator, demo: DemoVerifier
):
    assert await authn.authenticate(bearer("demo_alice")) == DEMO
    assert await authn.authenticate(bearer("demo_alice")) == DEMO
    assert demo.verified == ["demo_alice"]  # the second answer came from the validation cache
    assert demo.used == ["demo-1", "demo-1"]


async def test_a_registered_verifiers_refusal_is_a_401_challenge_counted_under_its_reason(
    authn: Authenticator, metrics: Metrics
):
    with pytest.raises(InvalidToken) as refused:
        await authn.authenticate(bearer("demo_mallory"))
    assert refused.value.headers is not None
    assert 'error="invalid_token"' in refused.value.headers["WWW-Authenticate"]
    assert "resource_metadata=" in refused.value.headers["WWW-Authenticate"]
    assert failures(metrics, "unknown") == 1


async def test_a_registered_verifier_refuses_malformed_credentials_before_verifying_them(
    authn: Authenticator, demo: DemoVerifier, metrics: Metrics
):
    with pytest.raises(InvalidToken, match="demo credential is malformed"):
        await authn.authenticate(bearer("demo_"))
    assert demo.verified == []
    assert failures(metrics, "malformed") == 1


@pytest.mark.parametrize("credential", ["gwrt_" + "a" * 43, "mgw_short", "nobody_knows_this"])
async def test_credentials_of_other_types_never_reach_the_registered_verifier(
    authn: Authenticator, demo: DemoVerifier, credential: str
):
    with pytest.raises(InvalidToken):
        await authn.authenticate(bearer(credential))
    assert demo.verified == []


async def test_an_open_streams_recheck_asks_the_verifier_that_owns_the_credential(
    authn: Authenticator, demo: DemoVerifier
):
    request = bearer("demo_alice")
    await authn.authenticate(request)
    credential = authn.credential_of(request)
    assert await authn.revalidate(credential)
    demo.valid = False
    assert not await authn.revalidate(credential)
    assert demo.verified == ["demo_alice"] * 3
