"""An app connects a service for a user it signed in (``initiate`` with the identity token), then calls the proxy
for that user (who is not the key's owner); the token exchange is refused to app keys and to tokens of the wrong
audience."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import aiohttp

from gateway.identity.web import IDENTITY
from gateway.secrets_hashing import secret_hash
from gateway.storage.app_flow import KeyApp
from gateway.vault.exchange import JWT_TYPE, TOKEN_EXCHANGE
from gateway.vault.revoke import disconnect_service
from gateway.vault.setup import VAULT
from tests.support.databases import Backend
from tests.support.gateway import GatewayHandle
from tests.support.oidc import OidcProvider
from tests.support.oidc import sign_in as provider_sign_in
from tests.vault.conftest import SERVICE, MovableClock, Outbound, connect, gateways, new_caller
from tests.vault.test_connect import connectable

APP_CALLBACK = "https://app.example/callback"


async def test_an_app_connects_a_service_for_its_signed_in_user_and_calls_the_proxy_for_them(db: Backend) -> None:
    async with connectable(db) as setup, aiohttp.ClientSession() as http:
        gw = setup.gateway
        developer, person = await gw.new_user(), await gw.new_user()
        key = await gw.new_key(developer, name="app")
        row = await gw.storage.get_api_key_by_hash(secret_hash(key))
        assert row is not None
        await gw.storage.set_key_app(KeyApp(row.id, (APP_CALLBACK,), False))
        token = await gw.app[IDENTITY].tokens.mint(subject=person.id, api_key_id=row.id)
        headers = {"X-API-Key": key, "Authorization": f"Bearer {token}"}
        params = {"service": SERVICE, "redirect_uri": APP_CALLBACK, "state": "s1"}

        url = f"{gw.url}/v1/auth/{SERVICE}/initiate"
        async with http.get(url, params=params, headers=headers, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
            location = response.headers["Location"]
        assert "offline_access" in location
        back = await provider_sign_in(setup.idp, location)
        assert back.startswith(gw.url + "/v1/auth/services/callback?")
        async with http.get(back, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
            landed = response.headers["Location"]
        assert landed.startswith(APP_CALLBACK + "?")
        assert parse_qs(urlsplit(landed).query) == {"service": [SERVICE], "state": ["s1"]}
        assert await gw.app[VAULT].vault.connection(person.id, SERVICE) is not None
        assert await gw.app[VAULT].vault.connection(developer.id, SERVICE) is None

        async with http.get(f"{gw.url}/v1/proxy/{SERVICE}/profile", headers=headers) as response:
            assert response.status == 200
            assert (await response.json())["email"] == "alice@example.com"

        not_allowed = {**params, "redirect_uri": "https://evil.example/cb"}
        async with http.get(url, params=not_allowed, headers=headers, allow_redirects=False) as response:
            assert response.status == 400
        # The same checks as the app flow's sign-in: one redirect_uri, and a printable ASCII state.
        repeated = [*params.items(), ("redirect_uri", "https://evil.example/cb")]
        non_ascii = {**params, "state": "s\u00e9"}
        for query in (repeated, non_ascii):
            async with http.get(url, params=query, headers=headers, allow_redirects=False) as response:
                assert response.status == 400
                assert (await response.json())["error"] == "invalid_request"


async def test_the_token_exchange_is_refused_to_app_keys_and_to_app_identity_tokens(db: Backend) -> None:
    async with connectable(db) as setup, aiohttp.ClientSession() as http:
        gw = setup.gateway
        app_owner, operator = await gw.new_user(), await gw.new_user()
        assert await gw.storage.set_role(operator.id, "admin")
        app_key, service_key = await gw.new_key(app_owner), await gw.new_key(operator)
        app_token = await gw.app[IDENTITY].tokens.mint(subject=app_owner.id, api_key_id="whatever")
        form = {"grant_type": TOKEN_EXCHANGE, "subject_token": app_token, "subject_token_type": JWT_TYPE}

        async with http.post(f"{gw.url}/v1/auth/token", data=form, headers={"X-API-Key": app_key}) as response:
            assert response.status in (400, 401)
            assert (await response.json())["error"] == "unauthorized_client"
        async with http.post(f"{gw.url}/v1/auth/token", data=form, headers={"X-API-Key": service_key}) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "invalid_grant"  # the app audience is not the upstream's


async def test_a_disconnect_on_one_replica_refuses_the_next_proxy_call_on_another(
    db: Backend, oidc_provider: OidcProvider, clock: MovableClock, outbound: Outbound
) -> None:
    async with gateways(db, oidc_provider, clock, outbound, count=2) as [a, b], aiohttp.ClientSession() as http:
        caller = await new_caller(a)
        await connect(a, oidc_provider, caller.user_id)
        async with http.get(f"{b.url}/v1/proxy/{SERVICE}/profile", headers=caller.headers()) as response:
            assert response.status == 200
        async with http.delete(f"{a.url}/v1/auth/{SERVICE}", headers=caller.headers()) as response:
            assert response.status == 204
        async with http.get(f"{b.url}/v1/proxy/{SERVICE}/profile", headers=caller.headers()) as response:
            assert response.status == 403
            assert (await response.json())["error"] == "service_not_connected"


class DisconnectWhileInFlight(Outbound):
    """The vault's session, which disconnects the user (on the other replica) the moment the provider's API has
    answered and before the gateway relays it: a call in flight when the disconnect commits."""

    def __init__(self) -> None:
        super().__init__()
        self.target: tuple[GatewayHandle, str] | None = None

    def session(self) -> aiohttp.ClientSession:
        async def on_end(_s: object, _c: object, params: aiohttp.TraceRequestEndParams) -> None:
            if self.target is not None and params.url.path.endswith("/api/profile"):
                other, user_id = self.target
                self.target = None
                assert await disconnect_service(other.app, user_id, SERVICE)

        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(on_end)
        return aiohttp.ClientSession(auto_decompress=False, trace_configs=[trace])


async def test_a_proxy_call_in_flight_when_the_service_is_disconnected_on_another_replica_is_refused(
    db: Backend, oidc_provider: OidcProvider, clock: MovableClock
) -> None:
    outbound = DisconnectWhileInFlight()
    async with gateways(db, oidc_provider, clock, outbound, count=2) as [a, b], aiohttp.ClientSession() as http:
        caller = await new_caller(a)
        await connect(a, oidc_provider, caller.user_id)
        outbound.target = (a, caller.user_id)
        async with http.get(f"{b.url}/v1/proxy/{SERVICE}/profile", headers=caller.headers()) as response:
            assert response.status == 403
            body = await response.json()
        assert body["error"] == "service_not_connected"
        assert "alice@example.com" not in str(body)
        assert outbound.target is None  # the disconnect did happen while the call was at the provider
