"""Fixtures of the app-flow tests: the storage suite's backends and the real OpenID provider (the gateway's
fixtures, ``any_storage``, ``sqlite_storage``, ``upstream`` and ``clock``, come from ``tests/conftest.py``)."""

from tests.storage.conftest import backend, storage
from tests.support.oidc import oidc_provider

__all__ = ["backend", "oidc_provider", "storage"]
