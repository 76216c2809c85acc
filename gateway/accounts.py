"""Accounts and API keys: the operations the CLI (and later the dashboard) perform."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from gateway.apikeys import ApiKeyFormat, MintedKey
from gateway.clock import Clock
from gateway.passwords import Passwords
from gateway.secrets_hashing import new_id
from gateway.storage.base import ApiKey, ApiKeyStore, User, UserStore
from gateway.text_safety import has_unsafe_characters

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}$")
MAX_KEY_NAME = 100


class AccountError(ValueError):
    """A request about accounts or keys that cannot be carried out; the message is safe to show."""


def normalise_email(email: str) -> str:
    """Trimmed and NFKC-normalised, so look-alike compatibility forms (fullwidth letters) are one account.

    The one check every entrance (sign-up, sign-in, the CLI) applies: an address with a control, escape or bidi
    character is refused, because it is later printed on terminals, written to logs and sent upstream in a header.
    """
    email = unicodedata.normalize("NFKC", email.strip())
    if has_unsafe_characters(email) or not _EMAIL.match(email):
        raise AccountError(f"not a valid email address: {email!r}")
    return email


@dataclass(frozen=True)
class Accounts:
    users: UserStore
    keys: ApiKeyStore
    passwords: Passwords
    key_format: ApiKeyFormat
    clock: Clock

    async def create_user(self, email: str, password: str) -> User:
        email = normalise_email(email)
        if await self.users.get_user_by_email(email) is not None:
            raise AccountError(f"a user with email {email} already exists")
        password_hash = await self.passwords.hash(password)
        return await self.users.create_user(
            user_id=new_id("usr"), email=email, password_hash=password_hash, now=self.clock.now()
        )

    async def set_password(self, user: User, password: str) -> None:
        await self.users.set_password_hash(user.id, await self.passwords.hash(password))

    async def require_user(self, email: str) -> User:
        user = await self.users.get_user_by_email(normalise_email(email))
        if user is None:
            raise AccountError(f"no user with email {email}")
        return user

    async def create_key(
        self,
        user: User,
        *,
        name: str,
        expires_in: float | None = None,
        key_id: str | None = None,
        scope: str | None = None,
    ) -> tuple[ApiKey, MintedKey]:
        """Mint a key for the user; the returned ``MintedKey.key`` is the only copy there will ever be.

        ``key_id`` (unguessable, chosen by the caller) makes creation idempotent: a second call with the same id
        raises ``Conflict`` and mints nothing. ``scope`` (checked by the caller against the policy, see
        ``gateway.policy.keys``): the scopes the key holds; None, everything."""
        name = name.strip()
        if not name or len(name) > MAX_KEY_NAME or not name.isprintable():
            raise AccountError(f"a key name is 1 to {MAX_KEY_NAME} printable characters")
        if expires_in is not None and expires_in <= 0:
            raise AccountError("expiry must be in the future")
        minted = self.key_format.mint()
        now = self.clock.now()
        row = ApiKey(
            id=key_id or new_id("key"),
            user_id=user.id,
            name=name,
            key_hash=minted.key_hash,
            display_prefix=minted.display_prefix,
            last_four=minted.last_four,
            created_at=now,
            expires_at=now + expires_in if expires_in is not None else None,
            scope=scope,
        )
        await self.keys.create_api_key(row)
        return row, minted
