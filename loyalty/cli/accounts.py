"""`loyalty accounts` and `loyalty transactions`: accounts and their ledger entries."""

from __future__ import annotations

import click

from loyalty.cli.context import Context, one_of, pass_ctx
from loyalty.cli.output import JSON_HELP, Columns, emit, table

ACCOUNT_COLUMNS: Columns = [
    ("id", lambda a: a["id"]),
    ("contact_id", lambda a: a["contact_id"]),
    ("balance", lambda a: a["points"]["balance"]),
    ("earned", lambda a: a["points"]["earned"]),
    ("adjusted", lambda a: a["points"]["adjusted"]),
    ("reversed", lambda a: a["points"]["reversed"]),
    ("revision", lambda a: a["revision"]),
]


@click.group("accounts")
def accounts_group() -> None:
    """Loyalty accounts."""


@accounts_group.command("get")
@click.option("--account-id")
@click.option("--contact-id")
@click.option("--member-id")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def accounts_get(ctx: Context, account_id: str | None, contact_id: str | None,
                 member_id: str | None, as_json: bool) -> None:
    """Show one account."""
    one_of(account_id=account_id, contact_id=contact_id, member_id=member_id)
    account = ctx.ledger().get_account(account_id=account_id, contact_id=contact_id,
                                       member_id=member_id)
    emit(account, as_json)


@accounts_group.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def accounts_list(ctx: Context, limit: int, cursor: str | None, as_json: bool) -> None:
    """List accounts, a page at a time."""
    result = ctx.ledger().list_accounts(limit, cursor)
    emit(result, as_json, lambda r: table(r["items"], ACCOUNT_COLUMNS, r["next_cursor"]))


@click.group("transactions")
def transactions_group() -> None:
    """Ledger entries of an account."""


@transactions_group.command("list")
@click.option("--account-id")
@click.option("--contact-id")
@click.option("--type", "type_", type=click.Choice(["EARN", "ADJUST", "REDEEM", "REFUND",
                                                    "EXPIRE", "REVERSE"]))
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def transactions_list(ctx: Context, account_id: str | None, contact_id: str | None,
                      type_: str | None, limit: int, cursor: str | None, as_json: bool) -> None:
    """List an account's ledger entries, newest first."""
    one_of(account_id=account_id, contact_id=contact_id)
    result = ctx.ledger().list_transactions(account_id=account_id, contact_id=contact_id,
                                            type_=type_, limit=limit, cursor=cursor)
    columns: Columns = [
        ("created_at", lambda e: e["created_at"]),
        ("type", lambda e: e["type"]),
        ("amount", lambda e: e["amount"]),
        ("balance_after", lambda e: e["balance_after"]),
        ("description", lambda e: e["description"]),
    ]
    emit(result, as_json, lambda r: table(r["items"], columns, r["next_cursor"]))
