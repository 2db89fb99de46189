"""Schema migrations of the audit store, by alembic, from the scripts shipped in this package.

``migrate(url)`` brings a store to the newest schema (creating it when empty); the sink does it
on start and ``modelyard audit migrate`` does it on demand. The schema version is kept in the
store's ``audit_schema_version`` table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy
import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from modelyard.audit.store.dialect import dialect_for, redact_url
from modelyard.errors import UnavailableError

__all__ = ["HEAD", "VERSION_TABLE", "current_version", "migrate"]

log = structlog.get_logger(__name__)

VERSION_TABLE = "audit_schema_version"
HEAD = "0002"  # the newest revision under migrations/versions
_SCRIPTS = Path(__file__).parent / "migrations"


def migrate(url: str, revision: str = "head") -> str:
    """Upgrade the store at ``url`` to ``revision``; returns the version it is at."""
    with _engine(url) as engine, engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(_SCRIPTS))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    version = current_version(url) or ""
    log.info("audit store migrated", store=redact_url(url), version=version)
    return version


def current_version(url: str) -> str | None:
    """The schema version of the store at ``url`` (None: never migrated)."""
    with _engine(url) as engine, engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


@contextmanager
def _engine(url: str) -> Iterator[sqlalchemy.Engine]:
    """A SQLAlchemy engine for one migration, disposed of afterwards."""
    dialect = dialect_for(url)
    if dialect.name == "sqlite":
        Path(dialect.target).parent.mkdir(parents=True, exist_ok=True)
    engine = sqlalchemy.create_engine(dialect.sqlalchemy_url)
    try:
        yield engine
    except sqlalchemy.exc.OperationalError as exc:
        raise UnavailableError(f"cannot reach audit store {redact_url(url)}: {exc.orig}") from None
    finally:
        engine.dispose()
