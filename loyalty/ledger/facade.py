"""`Ledger`: one object that holds the engine and answers with the rooms' functions.

Callers that hold a `Ledger` (the worker, the command line, the tests) need not
know which room a thing lives in; each method is one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine

from loyalty.errors import LoyaltyError
from loyalty.ledger import (
    accounts,
    activating,
    adjusting,
    boundary,
    crashes,
    dead_letters,
    earn_rules,
    earning,
    enrolment,
    expiring,
    granting,
    operations,
    outbox,
    program,
    redeeming,
    rewards,
    tiers,
    verify,
    webhooks,
)
from loyalty.ledger.dead_letters import Decode
from loyalty.ledger.entries import EventOutcome
from schemas.events import (
    ActivityEvent,
    AdjustPointsRequest,
    CreateAccountRequest,
    EarnPointsRequest,
    OrderCompletedEvent,
    OrderRefundedEvent,
    RedeemPointsRequest,
    RefundTransactionRequest,
    SignupEvent,
)


class Ledger:
    def __init__(self, engine: Engine, *, expiring_soon_days: int = 7) -> None:
        self.engine = engine
        #: LOYALTY_EXPIRING_SOON_DAYS: how far ahead expire_points warns.
        self.expiring_soon_days = expiring_soon_days

    # -- earning -------------------------------------------------------------------

    def apply_signup(self, event: SignupEvent) -> EventOutcome:
        return earning.apply_one(self.engine, event)

    def apply_order(self, event: OrderCompletedEvent) -> EventOutcome:
        return earning.apply_one(self.engine, event)

    def apply_activity(self, event: ActivityEvent) -> EventOutcome:
        return earning.apply_one(self.engine, event)

    def apply_refund(self, event: OrderRefundedEvent) -> EventOutcome:
        return earning.apply_one(self.engine, event)

    def apply_events(self, events: Sequence[earning.Event]) -> list[EventOutcome | LoyaltyError]:
        return earning.apply_events(self.engine, events)

    # -- adjusting -------------------------------------------------------------------

    def adjust_points(self, request: AdjustPointsRequest) -> dict[str, Any]:
        return adjusting.adjust_points(self.engine, request)

    # -- staff requests: accounts, earns, redemptions and their refunds ------------------

    def create_account(self, request: CreateAccountRequest) -> dict[str, Any]:
        return enrolment.create_account(self.engine, request)

    def earn_points(self, request: EarnPointsRequest) -> dict[str, Any]:
        return granting.earn_points(self.engine, request)

    def redeem_points(self, request: RedeemPointsRequest) -> dict[str, Any]:
        return redeeming.redeem_points(self.engine, request)

    def refund_transaction(self, request: RefundTransactionRequest) -> dict[str, Any]:
        return redeeming.refund_transaction(self.engine, request)

    def list_redemptions(self, *, account_id: str | None = None, contact_id: str | None = None,
                         limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        account = self.get_account(account_id=account_id, contact_id=contact_id)
        return redeeming.list_redemptions(self.engine, UUID(account["id"]), limit, cursor)

    def get_redemption(self, *, redemption_id: str | None = None,
                       code: str | None = None) -> dict[str, Any]:
        return redeeming.get_redemption(self.engine, redemption_id=redemption_id, code=code)

    # -- rewards ---------------------------------------------------------------------

    def list_rewards(self) -> dict[str, Any]:
        return rewards.list_rewards(self.engine)

    def create_reward(self, *, name: str, kind: str, value: Decimal | None,
                      currency: str | None, cost_in_points: int,
                      status: str = "ACTIVE",
                      tier_costs: Mapping[int, int] | None = None) -> dict[str, Any]:
        return rewards.create_reward(self.engine, name=name, kind=kind, value=value,
                                     currency=currency, cost_in_points=cost_in_points,
                                     status=status, tier_costs=tier_costs)

    def update_reward(self, reward_id: int, *, expected_revision: int | None = None,
                      **changes: Any) -> dict[str, Any]:
        return rewards.update_reward(self.engine, reward_id, expected_revision=expected_revision,
                                     **changes)

    # -- program settings --------------------------------------------------------------

    def show_program(self) -> dict[str, Any]:
        return program.show_program(self.engine)

    def set_program(self, *, expected_revision: int | None = None,
                    **changes: Any) -> dict[str, Any]:
        return program.set_program(self.engine, expected_revision=expected_revision, **changes)

    def list_pending(self, *, account_id: UUID | None = None,
                     contact_id: str | None = None) -> dict[str, Any]:
        return activating.list_pending(self.engine, account_id=account_id, contact_id=contact_id)

    def list_tiers(self) -> dict[str, Any]:
        return tiers.list_tiers(self.engine)

    def create_tier(self, *, name: str, required_points: int,
                    description: str | None = None) -> dict[str, Any]:
        return tiers.create_tier(self.engine, name=name, required_points=required_points,
                                 description=description)

    def update_tier(self, tier_id: int, *, expected_revision: int | None = None,
                    **changes: Any) -> dict[str, Any]:
        return tiers.update_tier(self.engine, tier_id, expected_revision=expected_revision,
                                 **changes)

    def delete_tier(self, tier_id: int) -> dict[str, Any]:
        return tiers.delete_tier(self.engine, tier_id)

    def recalculate_tiers(self, as_of: datetime) -> dict[str, Any]:
        return tiers.recalculate_tiers(self.engine, as_of)

    def activate_points(self, as_of: datetime) -> dict[str, Any]:
        return activating.activate_points(self.engine, as_of)

    def expire_points(self, as_of: datetime) -> dict[str, Any]:
        return expiring.expire_points(self.engine, as_of, self.expiring_soon_days)

    # -- accounts and what happened to them --------------------------------------------

    def get_account(self, *, account_id: str | None = None, contact_id: str | None = None,
                    member_id: str | None = None) -> dict[str, Any]:
        return accounts.get_account(self.engine, account_id=account_id, contact_id=contact_id,
                                    member_id=member_id)

    def list_accounts(self, limit: int, cursor: str | None = None) -> dict[str, Any]:
        return accounts.list_accounts(self.engine, limit, cursor)

    def list_transactions(self, *, account_id: str | None = None, contact_id: str | None = None,
                          type_: str | None = None, limit: int = 50,
                          cursor: str | None = None) -> dict[str, Any]:
        return accounts.list_transactions(self.engine, account_id=account_id,
                                          contact_id=contact_id, type_=type_, limit=limit,
                                          cursor=cursor)

    def list_events(self, *, contact_id: str | None = None, outcome: str | None = None,
                    limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        return accounts.list_events(self.engine, contact_id=contact_id, outcome=outcome,
                                    limit=limit, cursor=cursor)

    def totals(self) -> dict[str, Any]:
        return accounts.totals(self.engine)

    # -- earn rules ------------------------------------------------------------------

    def list_rules(self) -> dict[str, Any]:
        return earn_rules.list_rules(self.engine)

    def create_rule(self, *, name: str, trigger: str, kind: str, points: int,
                    money_amount: Decimal | None, currency: str | None,
                    status: str = "ACTIVE", activity: str | None = None,
                    tier_points: Mapping[int, int] | None = None) -> dict[str, Any]:
        return earn_rules.create_rule(self.engine, name=name, trigger=trigger, kind=kind,
                                      points=points, money_amount=money_amount,
                                      currency=currency, status=status, activity=activity,
                                      tier_points=tier_points)

    def update_rule(self, rule_id: int, *, expected_revision: int | None = None,
                    name: str | None = None, kind: str | None = None, points: int | None = None,
                    money_amount: Decimal | None = None, currency: str | None = None,
                    any_currency: bool = False, status: str | None = None,
                    tier_points: Mapping[int, int] | None = None) -> dict[str, Any]:
        return earn_rules.update_rule(self.engine, rule_id, expected_revision=expected_revision,
                                      name=name, kind=kind, points=points,
                                      money_amount=money_amount, currency=currency,
                                      any_currency=any_currency, status=status,
                                      tier_points=tier_points)

    # -- dead letters and replay -------------------------------------------------------

    def add_dead_letter(self, *, task_name: str | None, message_id: str | None, payload: str,
                        headers: Mapping[Any, Any], reason: str, error_detail: str) -> int:
        return dead_letters.add_dead_letter(self.engine, task_name=task_name,
                                            message_id=message_id, payload=payload,
                                            headers=headers, reason=reason,
                                            error_detail=error_detail)

    def dead_letter(self, letter_id: int) -> dict[str, Any]:
        return dead_letters.dead_letter(self.engine, letter_id)

    def dead_letter_stats(self) -> dict[str, Any]:
        return dead_letters.dead_letter_stats(self.engine)

    def list_dead_letters(self, *, reason: str | None = None, status: str | None = None,
                          since: datetime | None = None, limit: int = 50,
                          cursor: str | None = None) -> dict[str, Any]:
        return dead_letters.list_dead_letters(self.engine, reason=reason, status=status,
                                              since=since, limit=limit, cursor=cursor)

    def pending_dead_letter_ids(self, *, ids: list[int] | None = None, reason: str | None = None,
                                since: datetime | None = None,
                                limit: int | None = 100_000) -> list[int]:
        return dead_letters.pending_dead_letter_ids(self.engine, ids=ids, reason=reason,
                                                    since=since, limit=limit)

    def replay_dead_letter(self, letter_id: int, decode: Decode, *, dry_run: bool = False,
                           actor: str | None = None) -> dict[str, Any]:
        return dead_letters.replay_dead_letter(self.engine, letter_id, decode, dry_run=dry_run,
                                               actor=actor)

    def replay_dead_letters(self, letter_ids: Sequence[int], decode: Decode, *,
                            dry_run: bool = False, actor: str | None = None
                            ) -> list[dict[str, Any]]:
        return dead_letters.replay_dead_letters(self.engine, letter_ids, decode,
                                                dry_run=dry_run, actor=actor)

    def discard_dead_letter(self, letter_id: int, *, why: str, actor: str) -> dict[str, Any]:
        return dead_letters.discard_dead_letter(self.engine, letter_id, why=why, actor=actor)

    # -- crashes ---------------------------------------------------------------------

    def record_crash(self, message_id: str, task_name: str | None, error: str) -> int:
        return crashes.record_crash(self.engine, message_id, task_name, error)

    def record_crashes(self, messages: Mapping[str, str | None], error: str) -> dict[str, int]:
        return crashes.record_crashes(self.engine, messages, error)

    # -- verification ----------------------------------------------------------------

    def verify(self) -> dict[str, Any]:
        return verify.verify(self.engine)

    # -- outgoing events and operations ------------------------------------------------

    def relay_events(self, limit: int, deliver: Callable[[list[outbox.OutboxEvent]], list[str]]
                     ) -> list[outbox.OutboxEvent]:
        return outbox.relay(self.engine, limit, deliver)

    def send_due_webhooks(self, limit: int,
                          send: Callable[[webhooks.Due], tuple[bool, int | None, str]],
                          retry_in: Callable[[webhooks.Due], float | None]
                          ) -> list[tuple[webhooks.Due, bool]]:
        return webhooks.send_due(self.engine, limit, send, retry_in)

    def prune_outbox(self, older_than_seconds: int, limit: int = 10_000) -> dict[str, int]:
        """Delivered events and delivered webhook deliveries past the retention, in
        statements of `limit` rows until none is left."""
        pruned = {"outbox_events": 0, "webhook_deliveries": 0}
        prunes: dict[str, Callable[[Connection, int, int], int]] = {
            "outbox_events": outbox.prune, "webhook_deliveries": webhooks.prune_delivered}
        for name, prune in prunes.items():
            while True:
                n = boundary.run(self.engine,
                                 lambda c, p=prune: p(c, older_than_seconds, limit))  # type: ignore[misc]
                pruned[name] += n
                if n < limit:
                    break
        return pruned

    def outbox_events(self, account_id: UUID | None = None, limit: int = 1000
                      ) -> list[outbox.OutboxEvent]:
        return boundary.read(self.engine, lambda c: outbox.list_events(c, account_id, limit))

    def add_webhook(self, url: str, event_types: Sequence[str] | None, secret: str
                    ) -> dict[str, Any]:
        return boundary.run(self.engine,
                            lambda c: webhooks.add_subscription(c, url, event_types, secret))

    def list_webhooks(self, include_removed: bool = False) -> list[dict[str, Any]]:
        return boundary.read(self.engine, lambda c: webhooks.list_subscriptions(c, include_removed))

    def remove_webhook(self, subscription_id: int) -> dict[str, Any]:
        return boundary.run(self.engine, lambda c: webhooks.remove_subscription(c, subscription_id))

    def webhook_deliveries(self, subscription_id: int | None = None, status: str | None = None,
                           limit: int = 50) -> list[dict[str, Any]]:
        return boundary.read(self.engine, lambda c: webhooks.list_deliveries(
            c, subscription_id, status, limit))

    def redeliver_webhooks(self, delivery_id: int | None = None,
                           subscription_id: int | None = None) -> list[int]:
        return boundary.run(self.engine, lambda c: webhooks.redeliver(c, delivery_id,
                                                                      subscription_id))

    def operations_state(self) -> dict[str, Any]:
        return operations.operations_state(self.engine)
