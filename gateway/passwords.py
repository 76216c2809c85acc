"""Password hashing with argon2id, off the event loop and with bounded concurrency."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024


class WeakPassword(ValueError):
    pass


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"password must be at most {MAX_PASSWORD_LENGTH} characters")


class Passwords:
    """Hash and verify. Argon2 is deliberately expensive, so at most ``concurrency`` run at once."""

    def __init__(self, *, concurrency: int = 4, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self._slots = asyncio.Semaphore(concurrency)
        self._dummy: str | None = None

    def hash_sync(self, password: str) -> str:
        check_password_policy(password)
        return str(self._hasher.hash(password))

    async def hash(self, password: str) -> str:
        check_password_policy(password)
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def rehash(self, password: str) -> str:
        """A fresh hash of an already-verified password under the current parameters (no policy check)."""
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with weaker parameters than this hasher's (rehash at next sign-in)."""
        try:
            return bool(self._hasher.check_needs_rehash(password_hash))
        except InvalidHashError:
            return True

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """False on mismatch. With no hash (unknown user) it still spends the same work."""
        if len(password) > MAX_PASSWORD_LENGTH:
            return False
        if password_hash is None:
            if self._dummy is None:
                self._dummy = await asyncio.to_thread(self._hasher.hash, "dummy-password-for-timing")
            password_hash = self._dummy
            password = password + "\x00"
        async with self._slots:
            try:
                return bool(await asyncio.to_thread(self._hasher.verify, password_hash, password))
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False
