"""The JSON shapes of the public contract, built from database rows.

Pure functions: the CLI, task results and tests all print through these, so an
account looks the same everywhere.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from loyalty.errors import LoyaltyError


class InvalidCursor(LoyaltyError):
    reason = "invalid_cursor"


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def account_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "contact_id": row["contact_id"],
        "member_id": row["member_id"],
        "points": {
            "balance": row["balance"],
            "earned": row["earned"],
            "adjusted": row["adjusted"],
            "redeemed": row["redeemed"],
            "expired": row["expired"],
            "reversed": row["reversed"],
            # Reads only (statements.ACCOUNT), as points_expiration.
            **({"pending": int(row["pending_points"])} if "pending_points" in row else {}),
        },
        "revision": row["revision"],
        "created_at": _ts(row["created_at"]),
        "updated_at": _ts(row["updated_at"]),
        "last_activity_at": _ts(row["last_activity_at"]),
        **_expiration(row),
    }


def _expiration(row: Mapping[Any, Any]) -> dict[str, Any]:
    """`points_expiration` where the row was read with it (statements.ACCOUNT): reads of an
    account show it; results that snapshot an account as a write left it do not."""
    if "expiration_date" not in row:
        return {}
    tier = {"tier": row["tier"]} if "tier" in row else {}
    if row["expiration_date"] is None or not row["expiring_points"]:
        return {"points_expiration": None, **tier}
    return {"points_expiration": {"expiration_date": _ts(row["expiration_date"]),
                                  "expiring_points": int(row["expiring_points"])}, **tier}


def entry_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    source: dict[str, Any]
    if row["type"] == "EARN" and row["event_id"] is None:  # a staff earn
        source = {"activity": row["activity"], "actor": row["actor"]}
    elif row["type"] == "EARN":
        source = {
            "event_type": row["event_type"],
            "event_id": row["event_id"],
            "order_id": row["order_id"],
            "rule_id": row["rule_id"],
            "rule_revision": row["rule_revision"],
        }
        if row.get("activity") is not None:
            source.update(activity=row["activity"], reference_id=row.get("reference_id"))
    elif row["type"] == "REVERSE":
        source = {
            "order_id": row["order_id"],
            "refund_id": row["refund_id"],
            "reverses_transaction_id": str(row["reverses_entry_id"]),
            "due": row.get("due"),
            "taken": row.get("taken"),
            "shortfall": row.get("shortfall"),
        }
    elif row["type"] == "ADJUST":
        source = {
            "actor": row["actor"],
            "balance_before": row["balance_before"],
            "balance_after": row["balance_after"],
        }
    elif row["type"] == "REDEEM":
        source = {"actor": row["actor"]}
    elif row["type"] == "REFUND":
        source = {"actor": row["actor"], "refunds_transaction_id": _id(row["refunds_entry_id"])}
    else:
        source = {}
    return {
        "id": str(row["id"]),
        "account_id": str(row["account_id"]),
        "type": row["type"],
        "amount": row["amount"],
        "balance_after": row["balance_after"],
        "description": row["description"],
        "idempotency_key": row["idempotency_key"],
        "source": source,
        "created_at": _ts(row["created_at"]),
    }


def rule_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    money: Decimal | None = row["money_amount"]
    return {
        "id": row["id"],
        "name": row["name"],
        "trigger": row["trigger"],
        "kind": row["kind"],
        "points": row["points"],
        "money_amount": format(money.normalize(), "f") if money is not None else None,
        "currency": row["currency"],
        "activity": row.get("activity"),
        "tier_points": row.get("tier_points") or {},
        "status": row["status"],
        "revision": row["revision"],
        "created_at": _ts(row["created_at"]),
        "updated_at": _ts(row["updated_at"]),
    }


def _id(value: Any) -> str | None:
    return str(value) if value is not None else None


def _decimal(value: Decimal | None) -> str | None:
    return format(value.normalize(), "f") if value is not None else None


def reward_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "kind": row["kind"],
        "value": _decimal(row["value"]),
        "currency": row["currency"],
        "cost_in_points": row["cost_in_points"],
        "tier_costs": row.get("tier_costs") or {},
        "status": row["status"],
        "revision": row["revision"],
    }


def redemption_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The issue's redemption, and what finds its ledger entries and account."""
    return {
        "id": str(row["id"]),
        "reward_id": row["reward_id"],
        "points": row["points"],
        "count": row["count"],
        "code": row["code"],
        "status": row["status"],
        "reference_id": row["reference_id"],
        "created_at": _ts(row["created_at"]),
        "account_id": str(row["account_id"]),
        "transaction_id": str(row["redeem_entry_id"]),
        "refund_transaction_id": _id(row["refund_entry_id"]),
    }


def dead_letter_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "task_name": row["task_name"],
        "message_id": row["message_id"],
        "reason": row["reason"],
        "error_detail": row["error_detail"],
        "attempts": row["attempts"],
        "status": row["status"],
        "first_failed_at": _ts(row["first_failed_at"]),
        "last_failed_at": _ts(row["last_failed_at"]),
        "payload": row["payload"],
        "headers": row["headers"],
        "replay_outcome": row["replay_outcome"],
        "discarded_by": row["discarded_by"],
        "discard_reason": row["discard_reason"],
        "replayed_at": _ts(row["replayed_at"]),
        "discarded_at": _ts(row["discarded_at"]),
    }


def event_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A processed event: what the worker did with it, and the event as it was accepted."""
    return {
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "contact_id": row["contact_id"],
        "account_id": str(row["account_id"]),
        "order_id": row["order_id"],
        "outcome": row["outcome"],
        "points": row["points"],
        "ledger_entry_id": str(row["ledger_entry_id"]) if row["ledger_entry_id"] else None,
        "detail": row["detail"],
        "payload": row["payload"],
        "processed_at": _ts(row["processed_at"]),
    }


def page(items: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": next_cursor}


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor(f"invalid cursor {cursor!r}: pass a next_cursor printed by a list") from None


def decode_int_cursor(cursor: str) -> int:
    try:
        return int(decode_cursor(cursor))
    except ValueError:
        raise InvalidCursor(f"invalid cursor {cursor!r}: pass a next_cursor printed by a list") from None
