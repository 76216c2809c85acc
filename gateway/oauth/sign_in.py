"""Checking an e-mail and password, for the OAuth sign-in page and the dashboard's alike.

Failures are throttled per account *and* client address, and per client address (``EndpointLimits.login_*``):
a stranger's wrong passwords lock the stranger's address, never the owner signing in from theirs; many
addresses guessing one account only slow down (``login_failures_per_account_total``). The account a throttle
counts is the normalised address (NFKC, lower case), the same one the lookup uses, so look-alike spellings
(fullwidth letters, case) of one account share one budget. Every outcome is counted and audited.
"""

from __future__ import annotations

import contextlib

from aiohttp import web

from gateway.accounts import AccountError, normalise_email
from gateway.errors import ServiceUnavailable
from gateway.oauth.limits import EndpointLimits
from gateway.passwords import Passwords
from gateway.security_events import login_failed, login_succeeded
from gateway.storage.base import StorageUnavailable, User, UserStore


class TooManySignIns(Exception):
    """Too many failed attempts for this account or address; ``wait`` seconds before the next one."""

    def __init__(self, wait: float) -> None:
        super().__init__("too many sign-in attempts")
        self.wait = wait


def throttled_account(email: str) -> str:
    """The key failures of ``email`` are counted under: the account the lookup would find."""
    try:
        return normalise_email(email).lower()
    except AccountError:
        return email.strip().lower()


async def check_sign_in(
    app: web.Application,
    *,
    throttle: EndpointLimits,
    users: UserStore,
    passwords: Passwords,
    email: str,
    password: str,
    address: str,
    client_id: str | None,
    reason: str | None = None,
) -> User | None:
    """The active user these credentials belong to, or None (say only that sign-in failed). The attempt is
    charged before the password is checked and given back on success; raises ``TooManySignIns`` without
    looking at the password once the budget is spent."""
    account = throttled_account(email)
    wait = await throttle.login_attempt(account, address)
    if wait > 0:
        login_failed(app, user_id=None, email=email, client_id=client_id, throttled=True, reason="throttled")
        raise TooManySignIns(wait)
    try:
        user = await users.get_user_by_email(normalise_email(email))
    except AccountError:
        user = None
    except StorageUnavailable as exc:
        raise ServiceUnavailable("Sign-in service unavailable, retry shortly") from exc
    valid = await passwords.verify(user.password_hash if user is not None else None, password)
    if user is None or not valid or not user.active:
        cause = "unknown_account" if user is None else "wrong_password" if not valid else "disabled"
        login_failed(
            app,
            user_id=user.id if user is not None else None,
            email=email,
            client_id=client_id,
            throttled=False,
            reason=cause,
        )
        return None
    await throttle.login_succeeded(account, address)
    login_succeeded(app, user_id=user.id, client_id=client_id, reason=reason)
    if passwords.needs_rehash(user.password_hash):
        with contextlib.suppress(StorageUnavailable):
            await users.set_password_hash(user.id, await passwords.rehash(password))
    return user
