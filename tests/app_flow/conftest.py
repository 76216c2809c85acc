"""Fixtures of the app-flow tests: the storage suite's backends and the real OpenID provider."""

from tests.conftest import any_storage
from tests.storage.conftest import backend, storage
from tests.support.oidc import oidc_provider

__all__ = ["any_storage", "backend", "oidc_provider", "storage"]
