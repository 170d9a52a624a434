"""Engine lifecycle and migrations.

Engines hold sockets, and a socket shared by a parent and a forked child gets
interleaved bytes from both. So the engine is created lazily per process id:
a Celery prefork child builds its own on first use, and never reuses its parent's.
"""

from __future__ import annotations

import os
import threading
from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from loyalty.errors import NotMigratedError, SettingsError

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}


def get_engine(database_url: str, pool_size: int = 5) -> Engine:
    key = (os.getpid(), database_url)
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                _forget_inherited_locked()
                engine = _create(database_url, pool_size)
                _engines[key] = engine
    return engine


def _create(database_url: str, pool_size: int) -> Engine:
    try:
        url = make_url(database_url)
    except Exception as exc:
        raise SettingsError(f"LOYALTY_DATABASE_URL is not a valid URL: {exc}") from None
    if url.get_backend_name() != "postgresql":
        raise SettingsError("LOYALTY_DATABASE_URL must point at PostgreSQL")
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # a connection dropped by a server restart is replaced, not used
        pool_recycle=1800,
        # The pid names the process in pg_stat_activity, so an operator can tell which
        # worker process holds a lock or runs a slow query.
        connect_args={"connect_timeout": 10, "application_name": f"loyalty:{os.getpid()}"},
    )


def create_database_if_missing(database_url: str) -> bool:
    """Create the URL's database through the server's `postgres` database; True if created."""
    url = make_url(database_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    name = url.database
    if not name:
        raise SettingsError("LOYALTY_DATABASE_URL names no database")
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT",
                          poolclass=NullPool)
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                  {"n": name}).first()
            if exists:
                return False
            quoted = conn.dialect.identifier_preparer.quote(name)
            conn.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        admin.dispose()


def forget_inherited() -> None:
    """In a forked child: drop the parent's pools without closing the parent's sockets."""
    with _lock:
        _forget_inherited_locked()


def _forget_inherited_locked() -> None:
    for (pid, url), engine in list(_engines.items()):
        if pid != os.getpid():
            engine.dispose(close=False)
            del _engines[(pid, url)]


def dispose_all() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("loyalty") / "migrations"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head", app_url: str | None = None) -> str | None:
    """Migrate as the owner; with `app_url`, grant its role what it needs, in the same
    transaction. Returns the role granted, if any."""
    from loyalty.roles import grant_app

    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        return grant_app(conn, app_url) if app_url else None


def downgrade(engine: Engine, revision: str) -> None:
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def ensure_migrated(engine: Engine) -> None:
    current, head = current_revision(engine), head_revision()
    if current != head:
        where = "has no schema" if current is None else f"is at revision {current}"
        raise NotMigratedError(
            f"the database {where}, the code needs {head}: run `loyalty db upgrade` first"
        )
