"""Fixtures of the identity tests: the real OpenID provider (``tests/support/oidc.py``) and the storage suite's
backends (SQLite, PostgreSQL, PostgreSQL through PgBouncer) for the signing-key store contract."""

from tests.storage.conftest import backend, storage
from tests.support.oidc import oidc_provider

__all__ = ["backend", "oidc_provider", "storage"]
