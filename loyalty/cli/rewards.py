"""`loyalty rewards` (the catalogue) and `loyalty redemptions` (what was redeemed)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import click

from loyalty.cli.context import ROW_ID, Context, one_of, pass_ctx, tier_pairs
from loyalty.cli.output import JSON_HELP, Columns, emit, table
from loyalty.rewards import KINDS

REWARD_COLUMNS: Columns = [
    ("id", lambda r: r["id"]),
    ("name", lambda r: r["name"]),
    ("kind", lambda r: r["kind"]),
    ("value", lambda r: r["value"]),
    ("currency", lambda r: r["currency"]),
    ("cost_in_points", lambda r: r["cost_in_points"]),
    ("status", lambda r: r["status"]),
    ("revision", lambda r: r["revision"]),
]
REDEMPTION_COLUMNS: Columns = [
    ("created_at", lambda r: r["created_at"]),
    ("code", lambda r: r["code"]),
    ("reward_id", lambda r: r["reward_id"]),
    ("count", lambda r: r["count"]),
    ("points", lambda r: r["points"]),
    ("status", lambda r: r["status"]),
    ("transaction_id", lambda r: r["transaction_id"]),
]


def _value(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a decimal number",
                                 param_hint="--value") from None


@click.group("rewards")
def rewards_group() -> None:
    """The rewards catalogue: what points can be redeemed for."""


@rewards_group.command("list")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rewards_list(ctx: Context, as_json: bool) -> None:
    """List rewards."""
    emit(ctx.ledger().list_rewards(), as_json, lambda r: table(r["items"], REWARD_COLUMNS))


@rewards_group.command("create")
@click.option("--name", required=True)
@click.option("--kind", required=True, type=click.Choice(KINDS))
@click.option("--value", help="Money off (discount_amount) or a percentage (discount_percent).")
@click.option("--currency", help="ISO 4217 code, for discount_amount.")
@click.option("--cost-in-points", type=int, required=True)
@click.option("--tier-cost", "tier_costs", multiple=True, metavar="TIER_ID=POINTS",
              help="What it costs at a tier instead (repeatable).")
@click.option("--paused", is_flag=True, help="Create the reward PAUSED.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rewards_create(ctx: Context, name: str, kind: str, value: str | None, currency: str | None,
                   cost_in_points: int, tier_costs: tuple[str, ...], paused: bool,
                   as_json: bool) -> None:
    """Create a reward."""
    amount = _value(value)
    emit(ctx.ledger().create_reward(name=name, kind=kind, value=amount, currency=currency,
                                    cost_in_points=cost_in_points,
                                    status="PAUSED" if paused else "ACTIVE",
                                    tier_costs=tier_pairs(tier_costs, "--tier-cost")), as_json)


@rewards_group.command("update")
@click.argument("reward_id", type=ROW_ID)
@click.option("--name")
@click.option("--kind", type=click.Choice(KINDS))
@click.option("--value")
@click.option("--currency")
@click.option("--cost-in-points", type=int)
@click.option("--tier-cost", "tier_costs", multiple=True, metavar="TIER_ID=POINTS",
              help="Per-tier costs, replacing those it had (repeatable).")
@click.option("--revision", type=ROW_ID, help="Refuse unless the reward is at this revision.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rewards_update(ctx: Context, reward_id: int, name: str | None, kind: str | None,
                   value: str | None, currency: str | None, cost_in_points: int | None,
                   tier_costs: tuple[str, ...], revision: int | None, as_json: bool) -> None:
    """Change a reward; its revision goes up by one."""
    amount = _value(value)
    emit(ctx.ledger().update_reward(reward_id, expected_revision=revision, name=name, kind=kind,
                                    value=amount, currency=currency,
                                    cost_in_points=cost_in_points,
                                    tier_costs=tier_pairs(tier_costs, "--tier-cost") if tier_costs
                                    else None),
         as_json)


def _set_status(ctx: Context, reward_id: int, status: str, revision: int | None,
                as_json: bool) -> None:
    emit(ctx.ledger().update_reward(reward_id, expected_revision=revision, status=status),
         as_json)


@rewards_group.command("pause")
@click.argument("reward_id", type=ROW_ID)
@click.option("--revision", type=ROW_ID, help="Refuse unless the reward is at this revision.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rewards_pause(ctx: Context, reward_id: int, revision: int | None, as_json: bool) -> None:
    """Stop a reward from being redeemed (`reward_paused`)."""
    _set_status(ctx, reward_id, "PAUSED", revision, as_json)


@rewards_group.command("resume")
@click.argument("reward_id", type=ROW_ID)
@click.option("--revision", type=ROW_ID, help="Refuse unless the reward is at this revision.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rewards_resume(ctx: Context, reward_id: int, revision: int | None, as_json: bool) -> None:
    """Make a paused reward redeemable again."""
    _set_status(ctx, reward_id, "ACTIVE", revision, as_json)


@click.group("redemptions")
def redemptions_group() -> None:
    """Redemptions: the coupons that points were spent on."""


@redemptions_group.command("list")
@click.option("--account-id")
@click.option("--contact-id")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def redemptions_list(ctx: Context, account_id: str | None, contact_id: str | None, limit: int,
                     cursor: str | None, as_json: bool) -> None:
    """An account's redemptions, newest first."""
    one_of(account_id=account_id, contact_id=contact_id)
    result = ctx.ledger().list_redemptions(account_id=account_id, contact_id=contact_id,
                                           limit=limit, cursor=cursor)
    emit(result, as_json, lambda r: table(r["items"], REDEMPTION_COLUMNS, r["next_cursor"]))


@redemptions_group.command("get")
@click.option("--id", "redemption_id")
@click.option("--code", help="As printed, or typed in any case without the dashes.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def redemptions_get(ctx: Context, redemption_id: str | None, code: str | None,
                    as_json: bool) -> None:
    """Show one redemption."""
    one_of(id=redemption_id, code=code)
    emit(ctx.ledger().get_redemption(redemption_id=redemption_id, code=code), as_json)
