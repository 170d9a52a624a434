"""The Alembic head must build exactly the schema that loyalty.tables declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from loyalty import db
from loyalty.tables import metadata
from tests.conftest import drop_database, fresh_database, owner_url


def test_head_matches_tables(db_url: str) -> None:
    with db.get_engine(db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_downgrade_and_upgrade_round_trip(template_db: str) -> None:
    url = fresh_database(template_db)
    try:
        engine = db.get_engine(owner_url(url))
        db.downgrade(engine, "base")
        assert db.current_revision(engine) is None
        db.upgrade(engine, app_url=url)
        assert db.current_revision(engine) == db.head_revision()
        db.ensure_migrated(engine)
    finally:
        db.dispose_all()
        drop_database(url)
