"""The app flow's store contract on every backend: a key's callback URLs, sign-ins claimed exactly once, and the
(key, user) watermark raised by revoking an app-flow family."""

from __future__ import annotations

from gateway.oauth.token_formats import TokenType, mint
from gateway.secrets_hashing import new_id
from gateway.storage import Storage
from gateway.storage.app_flow import IDENTITY_RESOURCE, IDENTITY_SCOPE, AppSignIn, KeyApp
from gateway.storage.base import ApiKey, User
from gateway.storage.oauth import AccessToken, AuthorizationCode, TokenFamily

T0 = 1_800_000_000.0


async def _user_and_key(storage: Storage) -> tuple[User, ApiKey]:
    user = await storage.create_user(
        user_id=new_id("usr"), email=f"{new_id('u')}@example.com", password_hash="x", now=T0
    )
    key = ApiKey(new_id("key"), user.id, "app", new_id("hash"), "mgw_abcd", "abcd", T0)
    await storage.create_api_key(key)
    return user, key


async def test_a_key_app_is_stored_replaced_and_read_back(storage: Storage) -> None:
    _, key = await _user_and_key(storage)
    assert await storage.get_key_app(key.id) is None
    await storage.set_key_app(KeyApp(key.id, ("https://app.example/cb", "http://127.0.0.1/cb")))
    assert await storage.get_key_app(key.id) == KeyApp(key.id, ("https://app.example/cb", "http://127.0.0.1/cb"))
    await storage.set_key_app(KeyApp(key.id, ("https://app.example/other",), tokens_in_url=True))
    assert await storage.get_key_app(key.id) == KeyApp(key.id, ("https://app.example/other",), True)


async def test_a_sign_in_is_claimed_exactly_once_and_purged_after_it_expires(storage: Storage) -> None:
    _, key = await _user_and_key(storage)
    row = AppSignIn("h1", "corp", key.id, "https://app.example/cb", "s", "v", "n", T0, T0 + 600)
    await storage.create_app_sign_in(row)
    assert await storage.get_app_sign_in("h1") == row
    assert await storage.claim_app_sign_in("h1", now=T0 + 1)
    assert not await storage.claim_app_sign_in("h1", now=T0 + 2)
    claimed = await storage.get_app_sign_in("h1")
    assert claimed is not None
    assert claimed.used_at == T0 + 1
    assert await storage.purge_app_sign_ins(expired_before=T0 + 600) == 0
    assert await storage.purge_app_sign_ins(expired_before=T0 + 601) == 1
    assert await storage.get_app_sign_in("h1") is None


async def test_revoking_an_app_flow_family_raises_the_watermark_of_that_key_and_user_only(storage: Storage) -> None:
    user, key = await _user_and_key(storage)
    assert await storage.identity_not_before(key.id, user.id) is None

    def family(client_id: str, resource: str) -> TokenFamily:
        return TokenFamily(
            new_id("fam"), user.id, client_id, "https://app.example/cb", IDENTITY_SCOPE, resource, T0, T0 + 1e6
        )

    ours, oauth = family(key.id, IDENTITY_RESOURCE), family(key.id, "https://gw.example/mcp")
    # Families are created by redeeming a code (the only insert path of the grant store).
    for f in (ours, oauth):
        _, code_hash = mint(TokenType.CODE)
        await storage.create_code(
            AuthorizationCode(
                code_hash, f.client_id, user.id, f.redirect_uri, True, "", f.scope, f.resource, T0, T0 + 60
            )
        )
        access = AccessToken(
            mint(TokenType.ACCESS)[1], f.family_id, user.id, f.client_id, f.scope, f.resource, T0, T0 + 60
        )
        assert await storage.redeem_code(code_hash, now=T0, family=f, access=access, refresh=None)
    await storage.revoke_family(oauth.family_id, now=T0 + 5, reason="test")
    assert await storage.identity_not_before(key.id, user.id) is None
    await storage.revoke_family(ours.family_id, now=T0 + 10, reason="test")
    assert await storage.identity_not_before(key.id, user.id) == T0 + 10
    assert await storage.identity_not_before("key_other", user.id) is None
