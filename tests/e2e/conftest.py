"""End-to-end fixtures: the same session broker and unique names as the integration tier."""

from __future__ import annotations

from tests.integration.conftest import broker, reference_repo, unique

__all__ = ["broker", "reference_repo", "unique"]
