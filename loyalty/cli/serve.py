"""`loyalty worker`: start the worker, as `celery -A worker worker` does."""

from __future__ import annotations

import click

from loyalty import db
from loyalty.cli.context import Context, database_error
from loyalty.errors import NotMigratedError


@click.command("worker", context_settings={"ignore_unknown_options": True,
                                         "allow_extra_args": True})
@click.pass_context
def worker_command(click_ctx: click.Context) -> None:
    """Start the worker, as `celery -A worker worker` does. Extra options go to Celery."""
    ctx = click_ctx.ensure_object(Context)
    engine = db.get_engine(ctx.settings.database_url)
    try:
        db.ensure_migrated(engine)
    except NotMigratedError:
        raise
    except Exception as exc:
        raise database_error(exc) from None
    finally:
        db.dispose_all()
    from worker.app import app

    argv = ["worker", "--loglevel", ctx.settings.log_level,
            "--queues", "loyalty.events,loyalty.admin", *click_ctx.args]
    app.worker_main(argv=argv)
