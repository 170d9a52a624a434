"""Earn rules in the database: the active ones for earning, and the staff's changes to them.

The arithmetic and validation of a rule are pure (`loyalty.rules`); this module
stores rules and turns a refused change into a `RuleError` that says why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from loyalty import views
from loyalty.errors import InvalidRule, RuleError, RuleNotFound
from loyalty.ledger.boundary import LedgerIntegrityError, read, run
from loyalty.rules import EarnRule, validate_rule
from loyalty.tables import earn_rules

#: At most one ACTIVE rule per trigger and currency.
ONE_ACTIVE = "uq_earn_rules_one_active"


def active_rules(conn: Connection, trigger: str) -> list[EarnRule]:
    rows = conn.execute(
        select(earn_rules).where(earn_rules.c.trigger == trigger,
                                 earn_rules.c.status == "ACTIVE")
    ).mappings().all()
    return [_rule(r) for r in rows]


def list_rules(engine: Engine) -> dict[str, Any]:
    rows = read(
        engine,
        lambda conn: conn.execute(select(earn_rules).order_by(earn_rules.c.id)).mappings().all(),
    )
    return views.page([views.rule_json(r) for r in rows], None)


def create_rule(engine: Engine, *, name: str, trigger: str, kind: str, points: int,
                money_amount: Decimal | None, currency: str | None,
                status: str = "ACTIVE", activity: str | None = None,
                tier_points: Mapping[int, int] | None = None) -> dict[str, Any]:
    validate_rule(trigger=trigger, kind=kind, points=points, money_amount=money_amount,
                  currency=currency, status=status, activity=activity)
    _check_name(name)
    values = {"name": name, "trigger": trigger, "kind": kind, "points": points,
              "money_amount": money_amount, "currency": currency, "status": status,
              "activity": activity,
              "tier_points": _tier_points(tier_points or {}, trigger, kind, money_amount,
                                          currency, activity)}
    return _write_rule(
        engine,
        lambda conn: conn.execute(earn_rules.insert().values(**values).returning(earn_rules))
        .mappings().one(),
    )


def update_rule(engine: Engine, rule_id: int, *, expected_revision: int | None = None,
                name: str | None = None, kind: str | None = None, points: int | None = None,
                money_amount: Decimal | None = None, currency: str | None = None,
                any_currency: bool = False, status: str | None = None,
                tier_points: Mapping[int, int] | None = None) -> dict[str, Any]:
    """Change a rule; its revision goes up by one so later EARNs record the new terms."""
    def work(conn: Connection) -> Mapping[Any, Any]:
        current = conn.execute(
            select(earn_rules).where(earn_rules.c.id == rule_id).with_for_update()
        ).mappings().first()
        if current is None:
            raise RuleNotFound(f"no earn rule with id {rule_id}")
        if expected_revision is not None and expected_revision != current["revision"]:
            raise RuleError(
                f"rule {rule_id} is at revision {current['revision']}, not {expected_revision}"
            )
        given = {"name": name, "kind": kind, "points": points, "money_amount": money_amount,
                 "currency": currency, "status": status,
                 "tier_points": None if tier_points is None else _tier_points(
                     tier_points, current["trigger"], kind or current["kind"],
                     money_amount if money_amount is not None else current["money_amount"],
                     current["currency"], current["activity"])}
        merged = {**dict(current), **{k: v for k, v in given.items() if v is not None}}
        if any_currency:
            merged["currency"] = None
        if merged["kind"] == "fixed":
            merged["money_amount"] = None
        validate_rule(trigger=merged["trigger"], kind=merged["kind"], points=merged["points"],
                      money_amount=merged["money_amount"], currency=merged["currency"],
                      status=merged["status"], activity=merged["activity"])
        _check_name(merged["name"])
        if all(merged[f] == current[f] for f in given):
            return current  # nothing changes, so the revision does not move either
        return conn.execute(
            update(earn_rules)
            .where(earn_rules.c.id == rule_id)
            .values(**{f: merged[f] for f in given}, revision=earn_rules.c.revision + 1,
                    updated_at=func.now())
            .returning(earn_rules)
        ).mappings().one()

    return _write_rule(engine, work)


def _write_rule(engine: Engine, work: Callable[[Connection], Mapping[Any, Any]]
                ) -> dict[str, Any]:
    try:
        row = run(engine, work)
    except LedgerIntegrityError as exc:
        if exc.constraint == ONE_ACTIVE:
            raise RuleError("another ACTIVE rule already exists for this trigger and currency"
                            " (or activity): pause it first") from None
        raise RuleError(str(exc)) from None
    return views.rule_json(row)


def _rule(row: Mapping[Any, Any]) -> EarnRule:
    return EarnRule(**{k: row[k] for k in (
        "id", "name", "trigger", "kind", "points", "money_amount", "currency", "status", "revision",
        "activity")}, tier_points={int(k): v for k, v in (row.get("tier_points") or {}).items()})


def _tier_points(tier_points: Mapping[int, int], trigger: str, kind: str,
                 money_amount: Decimal | None, currency: str | None, activity: str | None
                 ) -> dict[str, int]:
    """Per-tier points as stored (tier ids as JSON keys), each valid as the rule's points."""
    for tier_id, points in tier_points.items():
        if tier_id < 1:
            raise InvalidRule(f"tier id {tier_id} is not a tier")
        validate_rule(trigger=trigger, kind=kind, points=points,
                      money_amount=money_amount if kind == "conversion" else None,
                      currency=currency, status="ACTIVE", activity=activity)
    return {str(k): v for k, v in sorted(tier_points.items())}


def _check_name(name: str) -> None:
    if not 1 <= len(name) <= 100:
        raise InvalidRule("name must be 1 to 100 characters")
