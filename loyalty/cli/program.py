"""Program-wide commands: `loyalty program`, `totals`, `verify` and `events`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from loyalty.cli.context import ROW_ID, Context, pass_ctx
from loyalty.cli.output import JSON_HELP, Columns, emit, table
from loyalty.program import EXPIRATION_MODES, TIER_STATUSES


@click.group("program")
def program_group() -> None:
    """Program settings: pending points, expiration, tiers."""


def _settings_text(s: dict[str, Any]) -> str:
    e, t = s["expiration"], s["tiers"]
    return "\n".join([
        f"pending_days: {s['pending_days']}",
        f"expiration: {e['mode']} (months {e['months']}, percentage {e['percentage']})",
        f"tiers: {t['status']} (rolling window {t['rolling_window_months']} months)",
        f"revision: {s['revision']}",
    ])


@program_group.command("show")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def program_show(ctx: Context, as_json: bool) -> None:
    """Show the program settings and their revision."""
    emit(ctx.ledger().show_program(), as_json, _settings_text)


@program_group.command("set")
@click.option("--pending-days", type=int, help="Days an order's points wait (0 to 90).")
@click.option("--expiration-mode", type=click.Choice(EXPIRATION_MODES))
@click.option("--expiration-months", type=int,
              help="Inactivity: 1 to 12 months; lots: 1 to 60 months.")
@click.option("--expiration-percentage", type=int,
              help="Inactivity: the share of the balance that expires (1 to 100).")
@click.option("--tiers-status", type=click.Choice(TIER_STATUSES))
@click.option("--rolling-window-months", type=int, help="Tier points window (1 to 36).")
@click.option("--revision", type=ROW_ID, help="Refuse unless the program is at this revision.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def program_set(ctx: Context, pending_days: int | None, expiration_mode: str | None,
                expiration_months: int | None, expiration_percentage: int | None,
                tiers_status: str | None, rolling_window_months: int | None,
                revision: int | None, as_json: bool) -> None:
    """Change program settings; the revision goes up by one."""
    given = {"pending_days": pending_days, "expiration_mode": expiration_mode,
             "expiration_months": expiration_months,
             "expiration_percentage": expiration_percentage, "tiers_status": tiers_status,
             "rolling_window_months": rolling_window_months}
    if all(v is None for v in given.values()):
        raise click.UsageError("give at least one setting to change")
    emit(ctx.ledger().set_program(expected_revision=revision, **given), as_json,
         _settings_text)


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
                  "duplicate_refund", "pending")

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


@click.group("pending")
def pending_group() -> None:
    """Points of orders still waiting out the program's pending_days."""


PENDING_COLUMNS: Columns = [
    ("available_at", lambda p: p["available_at"]),
    ("order_id", lambda p: p["order_id"]),
    ("points", lambda p: p["points"]),
    ("earned", lambda p: p["earned"]),
    ("event_id", lambda p: p["event_id"]),
]


@pending_group.command("list")
@click.option("--account-id", type=click.UUID)
@click.option("--contact-id")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def pending_list(ctx: Context, account_id: Any, contact_id: str | None, as_json: bool) -> None:
    """An account's pending points, soonest available first."""
    if (account_id is None) == (contact_id is None):
        raise click.UsageError("give --account-id or --contact-id")
    result = ctx.ledger().list_pending(account_id=account_id, contact_id=contact_id)
    emit(result, as_json, lambda r: table(r["items"], PENDING_COLUMNS))


@click.group("tiers")
def tiers_group() -> None:
    """Tier definitions: the highest whose required_points an account reaches is its tier."""


TIER_COLUMNS: Columns = [
    ("id", lambda t: t["id"]),
    ("name", lambda t: t["name"]),
    ("required_points", lambda t: t["required_points"]),
    ("description", lambda t: t["description"] or "-"),
    ("revision", lambda t: t["revision"]),
]


@tiers_group.command("list")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def tiers_list(ctx: Context, as_json: bool) -> None:
    """List the tiers, lowest first."""
    emit(ctx.ledger().list_tiers(), as_json, lambda r: table(r["items"], TIER_COLUMNS))


@tiers_group.command("create")
@click.option("--name", required=True, help="1 to 50 characters.")
@click.option("--required-points", type=int, required=True, help="1 to 9,999,999.")
@click.option("--description")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def tiers_create(ctx: Context, name: str, required_points: int, description: str | None,
                 as_json: bool) -> None:
    """Create a tier (at most 20)."""
    emit(ctx.ledger().create_tier(name=name, required_points=required_points,
                                  description=description), as_json)


@tiers_group.command("update")
@click.argument("tier_id", type=ROW_ID)
@click.option("--name")
@click.option("--required-points", type=int)
@click.option("--description")
@click.option("--revision", type=ROW_ID, help="Refuse unless the tier is at this revision.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def tiers_update(ctx: Context, tier_id: int, name: str | None, required_points: int | None,
                 description: str | None, revision: int | None, as_json: bool) -> None:
    """Change a tier; its revision goes up by one."""
    emit(ctx.ledger().update_tier(tier_id, expected_revision=revision, name=name,
                                  required_points=required_points, description=description),
         as_json)


@tiers_group.command("delete")
@click.argument("tier_id", type=ROW_ID)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def tiers_delete(ctx: Context, tier_id: int, as_json: bool) -> None:
    """Delete a tier; its accounts fall back at the next recalculation."""
    emit(ctx.ledger().delete_tier(tier_id), as_json)
