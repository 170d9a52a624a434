"""Shared fixtures: a database per test cloned from a migrated template, and real services.

A service that cannot be reached skips the tests that need it on a laptop but
fails them in CI (CI=1), so a missing service can never pass for a green run.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from loyalty import db
from loyalty.ledger import Ledger

# A developer's shell must not change what the tests see.
for _key in list(os.environ):
    if _key.startswith("LOYALTY_") and not _key.startswith("LOYALTY_TEST_"):
        del os.environ[_key]

ADMIN_URL = os.environ.get(
    "LOYALTY_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST = os.environ.get("LOYALTY_TEST_REDIS_HOST", "127.0.0.1")
RABBITMQ_URL = os.environ.get("LOYALTY_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
RUN_ID = uuid.uuid4().hex[:8]
IN_CI = bool(os.environ.get("CI"))


def require(host: str, port: int, what: str) -> None:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        message = f"{what} is not reachable on {host}:{port}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def _admin() -> psycopg.Connection:
    url = make_url(ADMIN_URL)
    return psycopg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password,
        dbname=url.database, autocommit=True,
    )


def database_url(name: str) -> str:
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    url = make_url(ADMIN_URL)
    require(url.host or "127.0.0.1", url.port or 5432, "PostgreSQL")
    name = f"loyalty_test_{RUN_ID}_template"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = db.get_engine(database_url(name))
    db.upgrade(engine)
    db.dispose_all()
    yield name
    db.dispose_all()
    with _admin() as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"loyalty_test_{RUN_ID}_%",)
        ).fetchall()
        for (dbname,) in rows:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def fresh_database(template: str) -> str:
    name = f"loyalty_test_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return database_url(name)


def drop_database(url: str) -> None:
    name = make_url(url).database
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(template_db: str) -> Iterator[str]:
    url = fresh_database(template_db)
    yield url
    db.dispose_all()
    drop_database(url)


@pytest.fixture
def ledger(db_url: str) -> Ledger:
    return Ledger(db.get_engine(db_url))


@pytest.fixture
def raw(db_url: str) -> Iterator[psycopg.Connection]:
    """A plain psycopg connection, for SQL that bypasses the application entirely."""
    url = make_url(db_url)
    conn = psycopg.connect(host=url.host, port=url.port, user=url.username,
                           dbname=url.database, autocommit=True)
    yield conn
    conn.close()
