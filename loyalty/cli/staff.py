"""Staff requests through the worker, as `loyalty adjust` sends them: `loyalty accounts
create`, `loyalty earn`, `loyalty redeem` and `loyalty refund-transaction`.

Each publishes to `loyalty.admin`, waits for the result and prints it; a rejected
request exits 1. `--request-id` makes a request repeatable: the same id gets the first
result again.
"""

from __future__ import annotations

from typing import Any

import click

from loyalty.cli.context import ROW_ID, Context, one_of, pass_ctx
from loyalty.cli.output import JSON_HELP
from loyalty.cli.publish import ask
from schemas.events import (
    TASK_OF,
    CreateAccountRequest,
    EarnPointsRequest,
    RedeemPointsRequest,
    RefundTransactionRequest,
)


def _request_options(command: Any) -> Any:
    """--request-id, --timeout and --json, shared by every staff request."""
    for option in reversed([
        click.option("--request-id", help="Idempotency key; defaults to a new UUID."),
        click.option("--timeout", type=float, default=30.0, show_default=True,
                     help="Seconds to wait for the worker's answer."),
        click.option("--json", "as_json", is_flag=True, help=JSON_HELP),
    ]):
        command = option(command)
    return command


@click.command("create")
@click.option("--contact-id", required=True)
@click.option("--member-id")
@click.option("--email")
@click.option("--name")
@_request_options
@pass_ctx
def accounts_create(ctx: Context, timeout: float, as_json: bool, **payload: Any) -> None:
    """Open an account for a contact, registering the contact if it is new (through the
    worker). An existing account is answered as `existing`."""
    ask(ctx, TASK_OF[CreateAccountRequest], timeout, as_json, **payload)


@click.command("earn")
@click.option("--account-id")
@click.option("--contact-id")
@click.option("--amount", type=int, required=True, help="Points to credit, 1 to 9999999.")
@click.option("--activity", required=True, help="What they were earned for, e.g. review.")
@click.option("--description")
@click.option("--actor", required=True, help="Who credits them.")
@_request_options
@pass_ctx
def earn(ctx: Context, timeout: float, as_json: bool, **payload: Any) -> None:
    """Credit points for an activity through the worker; exit 1 if rejected."""
    one_of(account_id=payload["account_id"], contact_id=payload["contact_id"])
    ask(ctx, TASK_OF[EarnPointsRequest], timeout, as_json, **payload)


@click.command("redeem")
@click.option("--account-id")
@click.option("--contact-id")
@click.option("--reward-id", type=ROW_ID, help="The reward to redeem.")
@click.option("--count", type=int, help="How many of the reward (1 to 100, default 1).")
@click.option("--amount", type=int, help="Points to redeem instead of a reward.")
@click.option("--revision", type=int, help="Reject unless the account is at this revision.")
@click.option("--reference-id", help="What the redemption is for, e.g. a cart or order id.")
@click.option("--actor", required=True, help="Who redeems.")
@_request_options
@pass_ctx
def redeem(ctx: Context, timeout: float, as_json: bool, **payload: Any) -> None:
    """Redeem points for a reward (or an amount) through the worker; prints the
    redemption's code. Exit 1 if rejected."""
    one_of(account_id=payload["account_id"], contact_id=payload["contact_id"])
    one_of(reward_id=payload["reward_id"], amount=payload["amount"])
    ask(ctx, TASK_OF[RedeemPointsRequest], timeout, as_json, **payload)


@click.command("refund-transaction")
@click.option("--transaction-id", required=True, help="The REDEEM transaction to refund.")
@click.option("--actor", required=True, help="Who refunds it.")
@click.option("--description")
@_request_options
@pass_ctx
def refund_transaction(ctx: Context, timeout: float, as_json: bool, **payload: Any) -> None:
    """Give back a redemption's points through the worker, once; exit 1 if rejected."""
    ask(ctx, TASK_OF[RefundTransactionRequest], timeout, as_json, **payload)
