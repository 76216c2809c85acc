"""Fixtures of the app-flow tests: the storage suite's backends and the real OpenID provider."""

from tests.storage.conftest import backend, storage
from tests.support.oidc import oidc_provider

__all__ = ["backend", "oidc_provider", "storage"]
