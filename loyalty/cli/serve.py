"""`loyalty worker`: start the worker, as `celery -A worker worker` does."""

from __future__ import annotations

import click

from loyalty import db
from loyalty.cli.context import Context, database_error
from loyalty.errors import NotMigratedError
from schemas.events import QUEUES


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
    # Only here is the worker imported, and its Celery app built.
    from worker.app import current

    argv = ["worker", "--loglevel", ctx.settings.log_level,
            "--queues", ",".join(QUEUES), *click_ctx.args]
    current().worker_main(argv=argv)
