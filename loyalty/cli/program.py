"""Program-wide commands: `loyalty totals`, `loyalty verify` and `loyalty events`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from loyalty.cli.context import Context, pass_ctx
from loyalty.cli.output import JSON_HELP, Columns, emit, table


@click.command("totals")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def totals(ctx: Context, as_json: bool) -> None:
    """Points across the whole program, as in Wix getProgramTotals."""
    emit(ctx.ledger().totals(), as_json)


@click.command("verify")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def verify(ctx: Context, as_json: bool) -> None:
    """Check every ledger invariant across the database; exit 1 on any violation."""
    report = ctx.ledger().verify()

    def text(r: dict[str, Any]) -> str:
        head = (f"{'ok' if r['ok'] else 'FAILED'}: {r['checked']['accounts']} accounts, "
                f"{r['checked']['entries']} ledger entries, {len(r['violations'])} violations")
        return "\n".join([head] + [json.dumps(v, default=str) for v in r["violations"]])

    emit(report, as_json, text)
    if not report["ok"]:
        sys.exit(1)


@click.group("events")
def events_group() -> None:
    """Events the worker has processed, with what it did with each."""


EVENT_OUTCOMES = ("earned", "duplicate_order", "duplicate_order_changed", "already_signed_up",
                  "no_points", "no_rule", "duplicate_activity", "reversed", "refund_recorded",
                  "duplicate_refund")

EVENT_COLUMNS: Columns = [
    ("processed_at", lambda e: e["processed_at"]),
    ("event_id", lambda e: e["event_id"]),
    ("type", lambda e: e["event_type"]),
    ("contact_id", lambda e: e["contact_id"]),
    ("order_id", lambda e: e["order_id"]),
    ("outcome", lambda e: e["outcome"]),
    ("points", lambda e: e["points"]),
    ("detail", lambda e: json.dumps(e["detail"], sort_keys=True) if e["detail"] else None),
]


@events_group.command("list")
@click.option("--contact-id", help="Events of this contact.")
@click.option("--outcome", type=click.Choice(EVENT_OUTCOMES), help="Events with this outcome.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def events_list(ctx: Context, contact_id: str | None, outcome: str | None, limit: int,
                cursor: str | None, as_json: bool) -> None:
    """List processed events, newest first, with their outcome and payload (in --json)."""
    if contact_id is None and outcome is None:
        raise click.UsageError("give --contact-id, --outcome or both")
    result = ctx.ledger().list_events(contact_id=contact_id, outcome=outcome, limit=limit,
                                      cursor=cursor)
    emit(result, as_json, lambda r: table(r["items"], EVENT_COLUMNS, r["next_cursor"]))
