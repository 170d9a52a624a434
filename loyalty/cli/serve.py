"""`loyalty worker` and `loyalty beat`: the long-running processes, as `celery` starts them."""

from __future__ import annotations

import click

from loyalty import db
from loyalty.cli.context import Context, database_error
from loyalty.errors import NotMigratedError
from loyalty.schedule import parse_schedule
from schemas.events import QUEUES, TASKS


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


@click.command("beat", context_settings={"ignore_unknown_options": True,
                                       "allow_extra_args": True})
@click.pass_context
def beat_command(click_ctx: click.Context) -> None:
    """Start Celery beat, sending the periodic program jobs (LOYALTY_BEAT_SCHEDULE) to
    `loyalty.admin`. Extra options go to Celery. Two beats double nothing: every job is
    idempotent, a second run finds no work."""
    ctx = click_ctx.ensure_object(Context)
    settings = ctx.settings
    # The producer's app: its broker, and message signing when it is configured.
    from loyalty.publish import Publisher

    app = Publisher(settings=settings).app
    app.conf.timezone = "UTC"
    app.conf.beat_schedule = {
        name: {"task": name, "schedule": float(seconds), "args": [{}],
               "options": {"queue": TASKS[name][0]}}
        for name, seconds in parse_schedule(settings.beat_schedule).items()}
    app.start(argv=["beat", "--loglevel", settings.log_level,
                    "--schedule", settings.beat_schedule_file, *click_ctx.args])
