"""`loyalty webhooks`: subscriptions to outgoing events, and their deliveries."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import click
from standardwebhooks import Webhook

from loyalty.cli.context import ROW_ID, Context, one_of, pass_ctx
from loyalty.cli.output import JSON_HELP, Columns, emit, table
from loyalty.notifications.targets import check_url
from schemas.notifications import EVENT_TYPES


@click.group("webhooks")
def webhooks_group() -> None:
    """Webhook subscriptions: outgoing events POSTed, signed, to a URL."""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _secret(value: str | None) -> str:
    if value is None:
        return new_secret()
    try:
        if not value.startswith("whsec_") or len(value) < 22:
            raise ValueError("too short")
        Webhook(value)
        base64.b64decode(value[len("whsec_"):], validate=True)
    except Exception:
        raise click.BadParameter("give whsec_ followed by at least 16 characters of base64 "
                                 "(or leave it out to have one made)", param_hint="--secret"
                                 ) from None
    return value


def _public(subscription: dict[str, Any], with_secret: bool) -> dict[str, Any]:
    shown = {
        "id": subscription["id"],
        "url": subscription["url"],
        "event_types": subscription["event_types"] or list(EVENT_TYPES),
        "all_event_types": subscription["event_types"] is None,
        "created_at": subscription["created_at"],
        "removed_at": subscription["removed_at"],
    }
    if with_secret:
        shown["secret"] = subscription["secret"]
    return shown


@webhooks_group.command("add")
@click.option("--url", required=True, help="Where to POST events (http:// or https://).")
@click.option("--event", "events", multiple=True, type=click.Choice(EVENT_TYPES),
              help="An event type to receive; repeat for more. None: every type.")
@click.option("--secret", help="The signing secret (whsec_...); made for you when left out.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def add(ctx: Context, url: str, events: tuple[str, ...], secret: str | None,
        as_json: bool) -> None:
    """Subscribe a URL; prints the subscription with its secret (shown only here)."""
    secret = _secret(secret)
    check_url(url, ctx.settings.webhook_allow_private)
    subscription = ctx.ledger().add_webhook(url, sorted(set(events)) or None, secret)
    emit(_public(subscription, with_secret=True), as_json)


SUBSCRIPTION_COLUMNS: Columns = [
    ("id", lambda s: s["id"]),
    ("url", lambda s: s["url"]),
    ("event_types", lambda s: "*" if s["all_event_types"] else ",".join(s["event_types"])),
    ("created_at", lambda s: s["created_at"]),
    ("removed_at", lambda s: s["removed_at"]),
]


@webhooks_group.command("list")
@click.option("--all", "include_removed", is_flag=True, help="Removed subscriptions too.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def list_(ctx: Context, include_removed: bool, as_json: bool) -> None:
    """List subscriptions (secrets are not shown)."""
    items = [_public(s, with_secret=False) for s in ctx.ledger().list_webhooks(include_removed)]
    emit({"items": items}, as_json, lambda r: table(r["items"], SUBSCRIPTION_COLUMNS))


@webhooks_group.command("remove")
@click.option("--id", "subscription_id", type=ROW_ID, required=True)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def remove(ctx: Context, subscription_id: int, as_json: bool) -> None:
    """Stop a subscription; its pending deliveries are failed (kept, redeliverable)."""
    emit(_public(ctx.ledger().remove_webhook(subscription_id), with_secret=False), as_json)


DELIVERY_COLUMNS: Columns = [
    ("id", lambda d: d["id"]),
    ("subscription", lambda d: d["subscription_id"]),
    ("event_id", lambda d: d["event_id"]),
    ("type", lambda d: d["event_type"]),
    ("status", lambda d: d["status"]),
    ("attempts", lambda d: d["attempts"]),
    ("last_status", lambda d: d["last_status_code"]),
    ("next_attempt_at", lambda d: d["next_attempt_at"] if d["status"] == "pending" else None),
    ("last_error", lambda d: d["last_error"]),
]


@webhooks_group.command("deliveries")
@click.option("--subscription", "subscription_id", type=ROW_ID, help="Of this subscription.")
@click.option("--status", type=click.Choice(("pending", "delivered", "failed")))
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def deliveries(ctx: Context, subscription_id: int | None, status: str | None, limit: int,
               as_json: bool) -> None:
    """List webhook deliveries, newest first."""
    items = ctx.ledger().webhook_deliveries(subscription_id, status, limit)
    emit({"items": items}, as_json, lambda r: table(r["items"], DELIVERY_COLUMNS))


@webhooks_group.command("redeliver")
@click.option("--id", "delivery_id", type=ROW_ID, help="One failed delivery.")
@click.option("--subscription", "subscription_id", type=ROW_ID,
              help="Every failed delivery of this subscription.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def redeliver(ctx: Context, delivery_id: int | None, subscription_id: int | None,
              as_json: bool) -> None:
    """Send failed deliveries again (the relay sends them, in their accounts' order)."""
    one_of(id=delivery_id, subscription=subscription_id)
    ids = ctx.ledger().redeliver_webhooks(delivery_id, subscription_id)
    emit({"redelivered": ids}, as_json,
         lambda r: f"{len(r['redelivered'])} deliveries due again: "
                   + (" ".join(str(i) for i in r["redelivered"]) or "-"))
