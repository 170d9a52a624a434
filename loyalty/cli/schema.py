"""`loyalty db`: the database schema, its roles and its migrations."""

from __future__ import annotations

import click

from loyalty import db
from loyalty.cli.context import Context, database_error, pass_ctx
from loyalty.cli.output import JSON_HELP, emit
from loyalty.settings import mask_url


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.option("--create-database", is_flag=True,
              help="Create the database first if it does not exist.")
@pass_ctx
def db_upgrade(ctx: Context, revision: str, create_database: bool) -> None:
    """Apply the Alembic migrations as the owner (LOYALTY_OWNER_DATABASE_URL), then grant
    the application role (the user of LOYALTY_DATABASE_URL) what it needs."""
    owner_url = ctx.settings.owner_database_url
    engine = db.get_engine(owner_url)
    try:
        if create_database and db.create_database_if_missing(owner_url):
            click.echo(f"created database {mask_url(owner_url)}")
        granted = db.upgrade(engine, revision, app_url=ctx.settings.database_url)
    except Exception as exc:
        raise database_error(exc) from None
    click.echo(f"database {mask_url(owner_url)} at revision {db.current_revision(engine)}")
    if granted:
        click.echo(f"granted the application role {granted} its rights")


@db_group.command("create-roles")
@pass_ctx
def db_create_roles(ctx: Context) -> None:
    """Create the owner and application roles and the database, as a superuser
    (LOYALTY_BOOTSTRAP_DATABASE_URL). Safe to run again: it updates what exists."""
    from loyalty.roles import create_roles

    s = ctx.settings
    try:
        done = create_roles(s.bootstrap_database_url, s.owner_database_url, s.database_url)
    except Exception as exc:
        raise database_error(exc) from None
    for line in done:
        click.echo(line)


@db_group.command("current")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def db_current(ctx: Context, as_json: bool) -> None:
    """Show the database's schema revision and the one this code needs."""
    engine = db.get_engine(ctx.settings.database_url)
    try:
        current = db.current_revision(engine)
    except Exception as exc:
        raise database_error(exc) from None
    head = db.head_revision()
    emit({"current": current, "head": head, "up_to_date": current == head}, as_json)
