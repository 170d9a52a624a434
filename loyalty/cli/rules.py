"""`loyalty rules`: which events earn how many points."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import click

from loyalty.cli.context import ROW_ID, Context, pass_ctx, tier_pairs
from loyalty.cli.output import JSON_HELP, Columns, emit, table

RULE_COLUMNS: Columns = [
    ("id", lambda r: r["id"]),
    ("name", lambda r: r["name"]),
    ("trigger", lambda r: r["trigger"]),
    ("kind", lambda r: r["kind"]),
    ("points", lambda r: r["points"]),
    ("per", lambda r: r["money_amount"] or "-"),
    ("currency", lambda r: r["currency"] or "any"),
    ("activity", lambda r: r.get("activity") or "-"),
    ("status", lambda r: r["status"]),
    ("revision", lambda r: r["revision"]),
]


def _money(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a decimal number", param_hint="--per") from None


@click.group("rules")
def rules_group() -> None:
    """Earn rules: which events earn how many points."""


@rules_group.command("list")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rules_list(ctx: Context, as_json: bool) -> None:
    """List all earn rules."""
    result = ctx.ledger().list_rules()
    emit(result, as_json, lambda r: table(r["items"], RULE_COLUMNS))


@rules_group.command("create")
@click.option("--name", required=True)
@click.option("--trigger", type=click.Choice(["signup", "order.completed", "activity"]),
              required=True)
@click.option("--activity", help="The activity an activity rule earns for (--trigger activity).")
@click.option("--kind", type=click.Choice(["fixed", "conversion"]), required=True)
@click.option("--points", type=int, required=True, help="N for fixed; P in P points per M.")
@click.option("--per", "money_amount", help="M money units, for a conversion rule.")
@click.option("--currency", help="Only orders in this currency (ISO 4217).")
@click.option("--tier-points", multiple=True, metavar="TIER_ID=POINTS",
              help="Points (fixed) or P of P per M (conversion) at a tier (repeatable).")
@click.option("--paused", is_flag=True, help="Create the rule PAUSED.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rules_create(ctx: Context, name: str, trigger: str, kind: str, points: int,
                 money_amount: str | None, currency: str | None, paused: bool,
                 as_json: bool, activity: str | None, tier_points: tuple[str, ...]) -> None:
    """Create an earn rule."""
    if (trigger == "activity") != (activity is not None):
        raise click.UsageError("--activity goes with --trigger activity, and it needs one")
    rule = ctx.ledger().create_rule(
        name=name, trigger=trigger, kind=kind, points=points, money_amount=_money(money_amount),
        currency=currency, status="PAUSED" if paused else "ACTIVE", activity=activity,
        tier_points=tier_pairs(tier_points, "--tier-points"))
    emit(rule, as_json)


@rules_group.command("update")
@click.argument("rule_id", type=ROW_ID)
@click.option("--name")
@click.option("--kind", type=click.Choice(["fixed", "conversion"]))
@click.option("--points", type=int)
@click.option("--per", "money_amount")
@click.option("--currency")
@click.option("--any-currency", is_flag=True, help="Remove the currency restriction.")
@click.option("--tier-points", multiple=True, metavar="TIER_ID=POINTS",
              help="Per-tier points, replacing those it had (repeatable).")
@click.option("--revision", type=ROW_ID, help="Refuse unless the rule is at this revision.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rules_update(ctx: Context, rule_id: int, name: str | None, kind: str | None,
                 points: int | None, money_amount: str | None, currency: str | None,
                 any_currency: bool, revision: int | None, as_json: bool,
                 tier_points: tuple[str, ...]) -> None:
    """Change a rule; its revision goes up by one."""
    if currency and any_currency:
        raise click.UsageError("give --currency or --any-currency, not both")
    rule = ctx.ledger().update_rule(
        rule_id, expected_revision=revision, name=name, kind=kind, points=points,
        money_amount=_money(money_amount), currency=currency, any_currency=any_currency,
        tier_points=tier_pairs(tier_points, "--tier-points") if tier_points else None)
    emit(rule, as_json)


def _set_status(ctx: Context, rule_id: int, status: str, as_json: bool) -> None:
    emit(ctx.ledger().update_rule(rule_id, status=status), as_json)


@rules_group.command("pause")
@click.argument("rule_id", type=ROW_ID)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rules_pause(ctx: Context, rule_id: int, as_json: bool) -> None:
    """Stop a rule from earning points."""
    _set_status(ctx, rule_id, "PAUSED", as_json)


@rules_group.command("resume")
@click.argument("rule_id", type=ROW_ID)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rules_resume(ctx: Context, rule_id: int, as_json: bool) -> None:
    """Make a paused rule earn points again."""
    _set_status(ctx, rule_id, "ACTIVE", as_json)
