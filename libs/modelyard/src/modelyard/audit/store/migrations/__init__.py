"""Alembic migrations of the audit store's schema (one script per version, under versions/)."""
