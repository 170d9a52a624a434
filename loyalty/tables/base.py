"""The one MetaData every table joins, and the column shapes the tables share."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, DateTime, MetaData, func

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def timestamp(name: str) -> Column:
    """A timestamp the database sets when the row is written."""
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())


def id_length(column: str) -> CheckConstraint:
    return CheckConstraint(f"char_length({column}) BETWEEN 1 AND 256", name=f"{column}_length")
