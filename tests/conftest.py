"""Shared fixtures: a database per test cloned from a migrated template, and real services.

A service that cannot be reached skips the tests that need it on a laptop but
fails them in CI (CI=1), so a missing service can never pass for a green run.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

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
#: The two roles of a deployment (loyalty.roles), shared by every test run on the server.
OWNER_ROLE = "loyalty_test_owner"
APP_ROLE = "loyalty_test_app"


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


def database_url(name: str, role: str = APP_ROLE) -> str:
    """The URL of a test database as `role`: the application role unless told otherwise."""
    return make_url(ADMIN_URL).set(database=name, username=role, password=None) \
        .render_as_string(hide_password=False)


def superuser_url(url: str) -> str:
    """The same database as the administrator the tests were given (a superuser)."""
    admin = make_url(ADMIN_URL)
    return make_url(url).set(username=admin.username, password=admin.password) \
        .render_as_string(hide_password=False)


def owner_url(url: str) -> str:
    return make_url(url).set(username=OWNER_ROLE).render_as_string(hide_password=False)


def _ensure_roles(conn: psycopg.Connection) -> None:
    for role in (OWNER_ROLE, APP_ROLE):
        try:
            conn.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
        except psycopg.errors.DuplicateObject:
            pass  # made by an earlier or a parallel run
        except psycopg.errors.UniqueViolation:
            pass  # a parallel run made it at the same moment


def _lock_down(conn: psycopg.Connection, name: str) -> None:
    """Database-level rights are not copied from a template: set them on every copy."""
    conn.execute(f'REVOKE TEMPORARY ON DATABASE "{name}" FROM PUBLIC')
    conn.execute(f'GRANT CONNECT ON DATABASE "{name}" TO {APP_ROLE}')


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    url = make_url(ADMIN_URL)
    require(url.host or "127.0.0.1", url.port or 5432, "PostgreSQL")
    name = f"loyalty_test_{RUN_ID}_template"
    with _admin() as conn:
        _ensure_roles(conn)
        conn.execute(f'CREATE DATABASE "{name}" OWNER {OWNER_ROLE}')
        _lock_down(conn, name)
    engine = db.get_engine(database_url(name, OWNER_ROLE))
    db.upgrade(engine, app_url=database_url(name))
    db.dispose_all()
    yield name
    db.dispose_all()
    _databases.settle()
    with _admin() as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"loyalty_test_{RUN_ID}_%",)
        ).fetchall()
        for (dbname,) in rows:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def _copy_template(template: str) -> str:
    name = f"loyalty_test_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" OWNER {OWNER_ROLE}')
        _lock_down(conn, name)
    return database_url(name)


def _drop(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class _Databases:
    """Copies of the template made a few ahead, and databases dropped, in background
    threads. A copy is mostly the server writing and syncing the template's pages, which
    overlap well: made several at once and while tests run, the next test seldom waits
    for its own. Each test still gets a database nobody used before it, and every one of
    them is dropped when the session ends (template_db)."""

    AHEAD = 5

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=6, thread_name_prefix="test-databases")
        self.ahead: dict[str, deque[Future[str]]] = {}
        self.drops: list[Future[None]] = []

    def take(self, template: str) -> str:
        made = self.ahead.setdefault(template, deque())
        while len(made) < self.AHEAD + 1:
            made.append(self.executor.submit(_copy_template, template))
        return made.popleft().result()

    def drop(self, name: str) -> None:
        self.drops = [f for f in self.drops if not f.done()]
        self.drops.append(self.executor.submit(_drop, name))

    def settle(self) -> None:
        """Wait for every copy and drop under way (their errors included)."""
        pending = [f for made in self.ahead.values() for f in made] + self.drops
        self.ahead.clear()
        self.drops = []
        for future in pending:
            future.result()


_databases = _Databases()


def fresh_database(template: str) -> str:
    return _databases.take(template)


def drop_database(url: str) -> None:
    _databases.drop(str(make_url(url).database))


@pytest.fixture
def db_url(template_db: str) -> Iterator[str]:
    url = fresh_database(template_db)
    yield url
    db.dispose_all()
    drop_database(url)


@pytest.fixture
def ledger(db_url: str) -> Ledger:
    return Ledger(db.get_engine(db_url))


def connect(url_text: str) -> psycopg.Connection:
    url = make_url(url_text)
    return psycopg.connect(host=url.host, port=url.port, user=url.username,
                           password=url.password, dbname=url.database, autocommit=True)


@pytest.fixture
def raw(db_url: str) -> Iterator[psycopg.Connection]:
    """A plain psycopg connection as the application role, for SQL that bypasses the
    application's code but not its database rights."""
    conn = connect(db_url)
    yield conn
    conn.close()


@pytest.fixture
def raw_owner(db_url: str) -> Iterator[psycopg.Connection]:
    """As the role that owns the schema: it may create temporary tables."""
    conn = connect(owner_url(db_url))
    yield conn
    conn.close()


@pytest.fixture
def raw_super(db_url: str) -> Iterator[psycopg.Connection]:
    """As a superuser, which can switch triggers off."""
    conn = connect(superuser_url(db_url))
    yield conn
    conn.close()
