"""One exception tree, so callers can catch everything of ours with `LoyaltyError`.

Each class carries a stable `reason` code: it is what dead letters, task results
and the command line report, so scripts can match on it.
"""

from __future__ import annotations


class LoyaltyError(Exception):
    reason = "error"


class SettingsError(LoyaltyError):
    reason = "invalid_settings"


class NotMigratedError(LoyaltyError):
    reason = "database_not_migrated"


class InvalidPayload(LoyaltyError):
    reason = "invalid_payload"


class AccountNotFound(LoyaltyError):
    reason = "account_not_found"


class OrderNotFound(LoyaltyError):
    """A refund whose order has not been applied (yet): retried like a missing account."""

    reason = "order_not_found"


class CurrencyMismatch(LoyaltyError):
    """A refund in another currency than its order's."""

    reason = "currency_mismatch"


class NoActiveRule(LoyaltyError):
    reason = "no_active_rule"


class PointsAboveMaximum(LoyaltyError):
    """An event would earn more than 9,999,999 points at once (Wix's earnPoints limit)."""

    reason = "points_above_maximum"


class BalanceAboveMaximum(LoyaltyError):
    """An event would take a balance above 999,999,999 points."""

    reason = "balance_above_maximum"


class IdempotencyConflict(LoyaltyError):
    """The same event_id or request_id arrived with a different payload."""

    reason = "idempotency_conflict"


class ContactConflict(LoyaltyError):
    """A member_id is already linked to another contact."""

    reason = "member_id_conflict"


class RuleError(LoyaltyError):
    reason = "invalid_rule"


class InvalidRule(RuleError):
    """A rule's terms are invalid input (exit 2), as against a refused change (exit 1)."""


class RuleNotFound(LoyaltyError):
    reason = "rule_not_found"


class RewardError(LoyaltyError):
    """A change to the rewards catalogue that was refused (a stale revision, say)."""

    reason = "invalid_reward"


class InvalidReward(RewardError):
    """A reward's terms are invalid input (exit 2), as against a refused change (exit 1)."""


class RewardNotFound(LoyaltyError):
    reason = "reward_not_found"


class ProgramError(LoyaltyError):
    """A program settings change refused: another change came first (revision)."""

    reason = "invalid_program"


class InvalidProgram(ProgramError):
    """Program settings outside their bounds (`loyalty.program`)."""


class TierError(LoyaltyError):
    """A tier change refused: a stale revision, a taken name or threshold, a 21st tier."""

    reason = "invalid_tier"


class InvalidTier(TierError):
    """A tier's terms are invalid input (exit 2)."""


class TierNotFound(LoyaltyError):
    reason = "tier_not_found"


class RedemptionNotFound(LoyaltyError):
    reason = "redemption_not_found"


class DeadLetterNotFound(LoyaltyError):
    reason = "dead_letter_not_found"


class DeadLetterNotPending(LoyaltyError):
    reason = "dead_letter_not_pending"


class NotReplayable(LoyaltyError):
    """A letter that no task can take: an unknown task, or a body that is not JSON."""

    reason = "not_replayable"


class TransientError(LoyaltyError):
    """The database could not be reached or asked us to try again; safe to retry."""

    reason = "transient"


class PublishError(LoyaltyError):
    reason = "publish_failed"


#: Why a staff request (adjust, earn, redeem, refund) was rejected: in its result,
#: never in a dead letter (a rejection is the request's answer and changes nothing).
STAFF_REJECTIONS: tuple[str, ...] = (
    "account_not_found", "revision_mismatch", "balance_below_zero", "balance_above_maximum",
    "insufficient_balance", "reward_not_found", "reward_paused", "transaction_not_found",
    "not_refundable", "already_refunded",
)

#: Every reason a dead letter can be kept for; `loyalty dlq list --reason` takes these.
DEAD_LETTER_REASONS: tuple[str, ...] = (
    "invalid_payload", "account_not_found", "no_active_rule", "retries_exhausted",
    "idempotency_conflict", "member_id_conflict", "points_above_maximum",
    "balance_above_maximum", "content_disallowed", "undecodable_body", "unknown_task",
    "malformed_message", "signature_invalid", "wrong_queue", "message_too_large", "poison",
    "internal_error", "order_not_found", "currency_mismatch",
)

#: Letters kept without being read, because the message was unreadable, unsigned or
#: forged, malformed, of an unknown task, from the wrong queue or too large. Replaying
#: one would run what the worker refused to run: they can only be discarded.
KEPT_UNREAD = frozenset({"content_disallowed", "undecodable_body", "signature_invalid",
                         "malformed_message", "unknown_task", "wrong_queue",
                         "message_too_large"})
