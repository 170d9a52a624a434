"""The rewards catalogue in the database: staff edit it, redemptions read it.

The terms are validated by `loyalty.rewards` first and by CHECK constraints after;
a change names the revision it expects, as earn rules do, and moves it by one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from loyalty import views
from loyalty.errors import InvalidReward, RewardError, RewardNotFound
from loyalty.ledger.boundary import LedgerIntegrityError, read, run
from loyalty.redemptions import Reward
from loyalty.rewards import MAX_COST, validate_reward
from loyalty.tables import rewards

TERMS = ("name", "kind", "value", "currency", "cost_in_points", "status", "tier_costs")


def reward_for_redemption(conn: Connection, reward_id: int) -> Reward | None:
    """The reward as it stands, held (FOR SHARE) so that a change waits for this redemption."""
    row = conn.execute(select(rewards).where(rewards.c.id == reward_id)
                       .with_for_update(read=True)).mappings().first()
    if row is None:
        return None
    return Reward(id=row["id"], name=row["name"], cost_in_points=row["cost_in_points"],
                  status=row["status"], revision=row["revision"],
                  tier_costs={int(k): v for k, v in row["tier_costs"].items()})


def list_rewards(engine: Engine) -> dict[str, Any]:
    rows = read(engine, lambda conn: conn.execute(
        select(rewards).order_by(rewards.c.id)).mappings().all())
    return views.page([views.reward_json(r) for r in rows], None)


def create_reward(engine: Engine, *, name: str, kind: str, value: Decimal | None,
                  currency: str | None, cost_in_points: int,
                  status: str = "ACTIVE",
                  tier_costs: Mapping[int, int] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {"name": name, "kind": kind, "value": value, "currency": currency,
              "cost_in_points": cost_in_points, "status": status}
    validate_reward(**values)
    values["tier_costs"] = _tier_costs(tier_costs or {})
    return _write(engine, lambda conn: conn.execute(
        rewards.insert().values(**values).returning(rewards)).mappings().one())


def update_reward(engine: Engine, reward_id: int, *, expected_revision: int | None = None,
                  **changes: Any) -> dict[str, Any]:
    """Change a reward's terms (those given, not None); its revision goes up by one.

    `value=None` cannot be told from "unchanged", so a kind without a value
    (free_shipping, custom) drops the value and currency it had.
    """
    unknown = set(changes) - set(TERMS)
    if unknown:
        raise TypeError(f"unknown reward terms: {sorted(unknown)}")

    def work(conn: Connection) -> Mapping[Any, Any]:
        current = conn.execute(select(rewards).where(rewards.c.id == reward_id)
                               .with_for_update()).mappings().first()
        if current is None:
            raise RewardNotFound(f"no reward with id {reward_id}")
        if expected_revision is not None and expected_revision != current["revision"]:
            raise RewardError(f"reward {reward_id} is at revision {current['revision']},"
                              f" not {expected_revision}")
        merged = {**{t: current[t] for t in TERMS},
                  **{k: v for k, v in changes.items() if v is not None}}
        merged["tier_costs"] = _tier_costs({int(k): v for k, v in merged["tier_costs"].items()})
        if merged["kind"] in ("free_shipping", "custom"):
            merged["value"] = merged["currency"] = None
        elif merged["kind"] == "discount_percent":
            merged["currency"] = None
        validate_reward(**{t: merged[t] for t in TERMS if t != "tier_costs"})
        if all(merged[t] == current[t] for t in TERMS):
            return current  # nothing changes, so the revision does not move either
        return conn.execute(
            update(rewards).where(rewards.c.id == reward_id)
            .values(**merged, revision=rewards.c.revision + 1, updated_at=func.now())
            .returning(rewards)).mappings().one()

    return _write(engine, work)


def _tier_costs(costs: Mapping[int, int]) -> dict[str, int]:
    """Per-tier costs as stored (tier ids as JSON keys), each within a reward's bounds."""
    for tier_id, cost in costs.items():
        if tier_id < 1 or not 1 <= cost <= MAX_COST:
            raise InvalidReward(f"a tier cost is a tier id and 1 to {MAX_COST} points,"
                                f" not {tier_id}={cost}")
    return {str(k): v for k, v in sorted(costs.items())}


def _write(engine: Engine, work: Callable[[Connection], Mapping[Any, Any]]) -> dict[str, Any]:
    try:
        row = run(engine, work)
    except LedgerIntegrityError as exc:
        raise RewardError(str(exc)) from None
    return views.reward_json(row)
