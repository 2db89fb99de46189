"""Alembic's environment for the audit store: migrate the connection ``migrate.py`` hands in.

No URL is read from a config file and no logging is configured: the caller owns both.
"""

from __future__ import annotations

from alembic import context

from modelyard.audit.store.migrate import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
