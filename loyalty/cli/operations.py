"""`loyalty health` and `loyalty relay`: is it working, and the outgoing events' relay."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import click

from loyalty import db, health, metrics
from loyalty.cli.context import Context, pass_ctx
from loyalty.cli.output import JSON_HELP, emit


@click.command("health")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def health_command(ctx: Context, as_json: bool) -> None:
    """Database, broker, migrations and the worker's heartbeat; exit 1 if any fails."""
    report = health.check(ctx.settings)

    def text(r: dict[str, Any]) -> str:
        lines = [f"{'ok' if r['ok'] else 'FAILED'}"]
        for name, found in r["checks"].items():
            more = " ".join(f"{k}={v}" for k, v in found.items() if k != "ok")
            lines.append(f"  {name}: {'ok' if found['ok'] else 'FAILED'}"
                         + (f" ({more})" if more else ""))
        return "\n".join(lines)

    emit(report, as_json, text)
    if not report["ok"]:
        sys.exit(1)


@click.command("relay")
@click.option("--once", is_flag=True,
              help="Send what is due now and exit, instead of running until stopped.")
@pass_ctx
def relay_command(ctx: Context, once: bool) -> None:
    """Send outgoing events: publish to loyalty.notifications and POST webhooks.

    Runs until SIGTERM or SIGINT; several relays may run at once."""
    from loyalty.notifications.relay import Relay
    from worker import log_format

    settings = ctx.settings
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    root.addHandler(logging.StreamHandler())
    log_format.configure(root, settings)
    if not once and metrics.prepare(settings):
        metrics.serve(settings)
    relay = Relay(settings, ctx.ledger())
    try:
        if once:
            relay.drain(timeout=300)
            relay.prune_pass(force=True)
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        click.echo("relay running", err=True)
        relay.run_forever(stop)
    finally:
        relay.close()
        db.dispose_all()
