"""Discovery and bookkeeping of the versioned SQL migrations shipped with the package.

Migrations live in ``gateway/storage/migrations/<backend>/NNNN_description.sql``; the numeric prefix is the
version. They are read with :mod:`importlib.resources` so an installed wheel works the same as a checkout.
Each backend records applied versions in ``schema_migrations(version, applied_at)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Literal

from gateway.storage.base import SchemaOutOfDate

Backend = Literal["sqlite", "postgres"]

_FILE_NAME = re.compile(r"^(?P<version>\d+)_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@cache
def load_migrations(backend: Backend) -> tuple[Migration, ...]:
    """All migrations of a backend, ordered by version.

    Raises ``ValueError`` for a ``.sql`` file whose name does not follow ``NNNN_description.sql``, for
    version 0, and for two files sharing a version.
    """
    directory = files("gateway.storage") / "migrations" / backend
    found: dict[int, Migration] = {}
    for entry in directory.iterdir():
        if not entry.is_file() or not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise ValueError(f"migration file {backend}/{entry.name} is not named NNNN_description.sql")
        version = int(match["version"])
        if version < 1:
            raise ValueError(f"migration file {backend}/{entry.name} has version 0; versions start at 1")
        if version in found:
            raise ValueError(f"migration version {version} appears twice under {backend}/")
        found[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    return tuple(found[version] for version in sorted(found))


def known_versions(backend: Backend) -> list[int]:
    return [migration.version for migration in load_migrations(backend)]


def pending_migrations(backend: Backend, applied: Iterable[int]) -> list[Migration]:
    """The known migrations not yet applied, in order."""
    done = set(applied)
    return [migration for migration in load_migrations(backend) if migration.version not in done]


def verify_schema(backend: Backend, applied: Iterable[int]) -> None:
    """Raise ``SchemaOutOfDate`` unless ``applied`` is exactly the set of known versions."""
    known = set(known_versions(backend))
    done = set(applied)
    missing = sorted(known - done)
    unknown = sorted(done - known)
    if missing:
        raise SchemaOutOfDate(
            f"database schema is out of date: migration(s) {_listing(missing)} not applied; run `mcp-gateway migrate`"
        )
    if unknown:
        raise SchemaOutOfDate(
            f"database schema is newer than this release: it has migration(s) {_listing(unknown)} "
            f"that this release does not know (it knows up to {max(known, default=0)}); "
            "upgrade the gateway, or restore a database matching this release and run `mcp-gateway migrate`"
        )


def _listing(versions: list[int]) -> str:
    return ", ".join(f"{version:04d}" for version in versions)
