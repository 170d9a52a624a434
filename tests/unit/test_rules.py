from decimal import Decimal

import pytest

from loyalty.errors import RuleError
from loyalty.rules import EarnRule, compute_points, select_rule, validate_rule


@pytest.mark.parametrize(
    ("points", "per", "total", "expected"),
    [
        (1, "1.00", "49.90", 49),
        (1, "1.00", "0.99", 0),
        (1, "1.00", "0", 0),
        (10, "3", "10.00", 33),  # 33.33.. floors, never rounds up
        (3, "0.10", "0.30", 9),  # a float would give 8.999.. and cost a point
        (7, "0.01", "99999999999999.9999", 69999999999999999),
        (1, "100", "99.99", 0),
        (5, "2.5", "12.49", 24),
    ],
)
def test_conversion_floors_with_decimal(points: int, per: str, total: str, expected: int) -> None:
    assert compute_points("conversion", points, Decimal(per), Decimal(total)) == expected


def test_fixed_rule_ignores_total() -> None:
    assert compute_points("fixed", 100, None, None) == 100
    assert compute_points("fixed", 100, None, Decimal("5")) == 100


@pytest.mark.parametrize("total", [None, Decimal("-1"), Decimal("NaN"), Decimal("Infinity")])
def test_conversion_refuses_bad_totals(total: Decimal | None) -> None:
    with pytest.raises(RuleError):
        compute_points("conversion", 1, Decimal("1"), total)


def _rule(id: int, trigger: str, currency: str | None, status: str = "ACTIVE") -> EarnRule:
    return EarnRule(id=id, name=f"r{id}", trigger=trigger, kind="conversion", points=1,
                    money_amount=Decimal(1), currency=currency, status=status, revision=1)


def test_currency_specific_rule_wins_over_general() -> None:
    rules = [_rule(1, "order.completed", None), _rule(2, "order.completed", "EUR")]
    assert select_rule(rules, "order.completed", "EUR").id == 2  # type: ignore[union-attr]
    assert select_rule(rules, "order.completed", "USD").id == 1  # type: ignore[union-attr]


def test_paused_and_other_trigger_rules_are_ignored() -> None:
    rules = [_rule(1, "order.completed", None, "PAUSED"), _rule(2, "signup", None),
             _rule(3, "order.completed", "EUR")]
    assert select_rule(rules, "order.completed", "USD") is None
    assert select_rule(rules, "order.completed", "EUR").id == 3  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"trigger": "refund"}, "trigger"),
        ({"kind": "percent"}, "kind"),
        ({"points": 0}, "points"),
        ({"points": 1_000_000_001}, "points"),
        ({"kind": "conversion", "money_amount": None}, "money amount"),
        ({"kind": "conversion", "money_amount": Decimal("0")}, "money amount"),
        ({"kind": "conversion", "money_amount": Decimal("0.00001")}, "4 decimals"),
        ({"kind": "fixed", "money_amount": Decimal("1")}, "no money"),
        ({"trigger": "signup", "kind": "fixed", "money_amount": None, "currency": "USD"}, "signup"),
        ({"currency": "usd"}, "ISO 4217"),
        ({"status": "DELETED"}, "status"),
    ],
)
def test_validate_rule_rejects(fields: dict, message: str) -> None:
    base = {"trigger": "order.completed", "kind": "conversion", "points": 1,
            "money_amount": Decimal("1"), "currency": None, "status": "ACTIVE"}
    with pytest.raises(RuleError, match=message):
        validate_rule(**{**base, **fields})


def test_validate_rule_accepts_defaults() -> None:
    validate_rule(trigger="signup", kind="fixed", points=100, money_amount=None, currency=None)
    validate_rule(trigger="order.completed", kind="conversion", points=1,
                  money_amount=Decimal("1.00"), currency="USD")


def test_conversion_floors_a_quotient_just_below_one() -> None:
    """total / money is 0.99999999999999999999...: binary floating point, or too few
    digits, would make it 1 and pay a point that `verify` (PostgreSQL's exact div()) says
    is not owed."""
    from decimal import Decimal

    from loyalty.rules import compute_points

    assert compute_points("conversion", 1, Decimal("99999999999999.9999"),
                          Decimal("99999999999999.9998")) == 0
    assert compute_points("conversion", 1, Decimal("99999999999999.9999"),
                          Decimal("99999999999999.9999")) == 1
