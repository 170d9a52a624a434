"""Table definitions. The migrations create them; a test checks both agree.

Invariants are declared here as CHECK constraints and unique indexes so that no
code path, including raw SQL, can write a ledger that does not add up. The
triggers that complete them (append-only ledger, balance chain, revision
increments) live in the first migration.

One module per concept, all on one MetaData (`base`): `ledger` (contacts, accounts, the
ledger and its totals, order refunds), `program` (settings, earn rules, tiers, point
lots), `messages` (accepted events, staff requests, dead letters, crashes),
`redemptions` (rewards and redemptions), `outbox` (outgoing events and webhooks). Every
name is importable from here too.
"""

from __future__ import annotations

from loyalty.tables.base import metadata
from loyalty.tables.ledger import (
    ACTIVITY_EARN_CHECK,
    accounts,
    contacts,
    ledger_entries,
    ledger_totals,
    order_refunds,
)
from loyalty.tables.messages import dead_letters, message_crashes, processed_events, staff_requests
from loyalty.tables.outbox import (
    OUTBOX_EVENT_TYPES,
    outbox_events,
    webhook_deliveries,
    webhook_subscriptions,
)
from loyalty.tables.program import (
    PROGRAM_EXPIRATION_CHECK,
    account_tiers,
    earn_rule_revisions,
    earn_rules,
    expiry_warnings,
    lot_totals,
    point_lots,
    program,
    tiers,
)
from loyalty.tables.redemptions import redemptions, rewards

__all__ = [
    "ACTIVITY_EARN_CHECK",
    "OUTBOX_EVENT_TYPES",
    "PROGRAM_EXPIRATION_CHECK",
    "account_tiers",
    "accounts",
    "contacts",
    "dead_letters",
    "earn_rule_revisions",
    "earn_rules",
    "expiry_warnings",
    "ledger_entries",
    "ledger_totals",
    "lot_totals",
    "message_crashes",
    "metadata",
    "order_refunds",
    "outbox_events",
    "point_lots",
    "processed_events",
    "program",
    "redemptions",
    "rewards",
    "staff_requests",
    "tiers",
    "webhook_deliveries",
    "webhook_subscriptions",
]
