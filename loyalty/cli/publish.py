"""`loyalty publish` and `loyalty adjust`: messages to the broker, as a producer sends them.

They publish through `loyalty.publish`; the worker is never imported here.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import click

from loyalty.cli.context import Context, one_of, pass_ctx
from loyalty.cli.output import JSON_HELP, emit, printable
from loyalty.errors import TransientError
from schemas.events import TASK_OF, AdjustPointsRequest


@click.group("publish")
def publish_group() -> None:
    """Publish events to the broker, as a shop's producer would."""


@publish_group.command("signup")
@click.option("--contact-id", required=True)
@click.option("--event-id", help="Defaults to a new UUID.")
@click.option("--member-id")
@click.option("--email")
@click.option("--name")
@click.option("--occurred-at", help="RFC 3339 timestamp; defaults to now.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def publish_signup(ctx: Context, as_json: bool, **fields: Any) -> None:
    """Publish loyalty.events.signup."""
    with ctx.publisher() as publisher:
        sent = publisher.signup(**fields)
    emit(sent, as_json, lambda s: f"published {s['task']} event_id={s['payload']['event_id']}")


@publish_group.command("order")
@click.option("--contact-id", required=True)
@click.option("--order-id", required=True)
@click.option("--total", required=True, help='Decimal string, e.g. "49.90".')
@click.option("--currency", required=True, help="ISO 4217 code, e.g. USD.")
@click.option("--event-id", help="Defaults to a new UUID.")
@click.option("--occurred-at", help="RFC 3339 timestamp; defaults to now.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def publish_order(ctx: Context, as_json: bool, **fields: Any) -> None:
    """Publish loyalty.events.order_completed."""
    with ctx.publisher() as publisher:
        sent = publisher.order_completed(**fields)
    emit(sent, as_json, lambda s: f"published {s['task']} event_id={s['payload']['event_id']}")


@publish_group.command("activity")
@click.option("--contact-id", required=True)
@click.option("--activity", required=True, help="What the customer did, e.g. review.")
@click.option("--reference-id", help="Earns once per account, activity and reference.")
@click.option("--event-id", help="Defaults to a new UUID.")
@click.option("--occurred-at", help="RFC 3339 timestamp; defaults to now.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def publish_activity(ctx: Context, as_json: bool, **fields: Any) -> None:
    """Publish loyalty.events.activity."""
    with ctx.publisher() as publisher:
        sent = publisher.activity(**fields)
    emit(sent, as_json, lambda s: f"published {s['task']} event_id={s['payload']['event_id']}")


@publish_group.command("refund")
@click.option("--contact-id", required=True)
@click.option("--order-id", required=True)
@click.option("--refund-id", required=True, help="Applies once per order.")
@click.option("--amount", required=True, help='Money refunded by this refund, e.g. "10.00".')
@click.option("--currency", required=True, help="ISO 4217 code, the order's.")
@click.option("--event-id", help="Defaults to a new UUID.")
@click.option("--occurred-at", help="RFC 3339 timestamp; defaults to now.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def publish_refund(ctx: Context, as_json: bool, **fields: Any) -> None:
    """Publish loyalty.events.order_refunded."""
    with ctx.publisher() as publisher:
        sent = publisher.order_refunded(**fields)
    emit(sent, as_json, lambda s: f"published {s['task']} event_id={s['payload']['event_id']}")


@click.command("adjust")
@click.option("--account-id")
@click.option("--contact-id")
@click.option("--amount", type=int, help="Points to add (negative to remove).")
@click.option("--balance", type=int, help="Set the balance to this value.")
@click.option("--description", required=True)
@click.option("--actor", required=True, help="Who asked for the adjustment.")
@click.option("--revision", type=int, help="Reject unless the account is at this revision.")
@click.option("--request-id", help="Idempotency key; defaults to a new UUID.")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the worker's answer.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def adjust(ctx: Context, account_id: str | None, contact_id: str | None, amount: int | None,
           balance: int | None, description: str, actor: str, revision: int | None,
           request_id: str | None, timeout: float, as_json: bool) -> None:
    """Adjust an account's points through the worker; exit 1 if the request is rejected."""
    one_of(account_id=account_id, contact_id=contact_id)
    one_of(amount=amount, balance=balance)
    ask(ctx, TASK_OF[AdjustPointsRequest], timeout, as_json, request_id=request_id,
        account_id=account_id, contact_id=contact_id, amount=amount, balance=balance,
        description=description, actor=actor, revision=revision)


#: The statuses of a staff request that did what it was asked; any other exits 1.
DONE = ("applied", "created", "existing")


def ask(ctx: Context, task: str, timeout: float, as_json: bool, **payload: Any) -> None:
    """Publish a staff request, wait for its result and print it; exit 1 unless it was done.

    The request_id is chosen here, so that the one printed on a timeout is the one to
    repeat (with --request-id) to read the first result.
    """
    payload["request_id"] = payload.get("request_id") or str(uuid.uuid4())
    with ctx.publisher() as publisher:
        pending = publisher.request(task, **payload)
        try:
            result = pending.get(timeout=timeout, propagate=True)
        except Exception as exc:
            if type(exc).__name__ == "TimeoutError":
                raise TransientError(
                    f"no answer from a worker within {timeout:g}s (request"
                    f" {payload['request_id']} is queued and will still be applied once;"
                    " repeat with --request-id to read it)") from None
            raise
    emit(result, as_json, result_text)
    if result.get("status") not in DONE:
        sys.exit(1)


def result_text(result: dict[str, Any]) -> str:
    account = result.get("account") or {}
    points = account.get("points", {})
    status = result.get("status")
    if status in ("created", "existing"):
        return f"{status}: account {account.get('id')} for contact {printable(account.get('contact_id'))}"
    if status == "applied":
        code = (result.get("redemption") or {}).get("code")
        coupon = f", code {code}" if code else ""
        return (f"applied: transaction {result['transaction_id']}{coupon}; balance"
                f" {points.get('balance')}, revision {account.get('revision')}")
    detail = f" ({printable(result['detail'])})" if result.get("detail") else ""
    return f"rejected: {result.get('reason')}{detail}"
