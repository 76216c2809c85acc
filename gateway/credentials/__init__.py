"""The resource server's credential layer: which credential a request carries, who it proves, and for how long
that answer may be reused.

extract.py         the one credential of a request (headers only), the ``WWW-Authenticate`` challenge
principal.py       Principal (who), Verified (until when), Refusal (why not)
verifier.py        CredentialVerifier: the Protocol one credential type implements
api_keys.py        ApiKeyVerifier
oauth_tokens.py    AccessTokenVerifier (gateway access tokens)
cache.py           ValidationCache: ≤ 1 s, or while the revocation watermark stays put; indexed for revocations
watermark.py       Watermark: reads the storage's revocation watermark on its own timer
authenticator.py   Authenticator: extraction → first matching verifier → cache → scope check
setup.py           setup_credentials(app): the AUTHENTICATOR and WATERMARK app keys

A new credential type is one module implementing ``CredentialVerifier``, added to the list in ``setup.py``.
"""

from gateway.credentials.authenticator import Authenticator
from gateway.credentials.cache import DEFAULT_CACHE_TTL, MAX_CACHE_TTL, ValidationCache
from gateway.credentials.extract import Challenge, Presented, extract_credential
from gateway.credentials.principal import Principal, Refusal, Verified
from gateway.credentials.verifier import CredentialVerifier
from gateway.credentials.watermark import Watermark

__all__ = [
    "DEFAULT_CACHE_TTL",
    "MAX_CACHE_TTL",
    "Authenticator",
    "Challenge",
    "CredentialVerifier",
    "Presented",
    "Principal",
    "Refusal",
    "ValidationCache",
    "Verified",
    "Watermark",
    "extract_credential",
]
