"""A real PostgreSQL server for the tests: ``scripts/postgres.sh start`` (a throwaway cluster
under .cache/postgres, reused while it runs), and a fresh database per test.

Import the fixtures into a test module (``from tests.support.postgres import postgres_url,
postgres_db``). The server is left running after the session: starting it costs a second,
and the next session reuses it.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

__all__ = ["postgres_db", "postgres_url"]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "postgres.sh"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of the session's PostgreSQL server (database ``modelyard``)."""
    started = subprocess.run(
        ["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=120, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"scripts/postgres.sh start failed: {started.stderr.strip()}")
    return started.stdout.strip().splitlines()[-1]


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """The URL of a database of its own for this test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
