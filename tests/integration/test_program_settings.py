"""The program record: revision-checked changes, and CHECKs that hold against raw SQL."""

from __future__ import annotations

import psycopg
import pytest

from loyalty.errors import InvalidProgram, ProgramError
from loyalty.ledger import Ledger
from tests.integration.test_invariants_sql import denied, refused


def test_set_moves_the_revision_once(ledger: Ledger) -> None:
    assert ledger.show_program()["revision"] == 1
    shown = ledger.set_program(expected_revision=1, expiration_mode="lots",
                               expiration_months=6, pending_days=14)
    assert shown == {"pending_days": 14,
                     "expiration": {"mode": "lots", "months": 6, "percentage": None},
                     "tiers": {"status": "DISABLED", "rolling_window_months": 12},
                     "revision": 2}
    # The same values again change nothing, so the revision stays.
    assert ledger.set_program(pending_days=14)["revision"] == 2
    with pytest.raises(ProgramError, match="at revision 2, not 1") as info:
        ledger.set_program(expected_revision=1, pending_days=3)
    assert info.value.reason == "invalid_program"
    with pytest.raises(InvalidProgram, match="pending_days must be 0 to 90"):
        ledger.set_program(pending_days=91)
    assert ledger.show_program() == shown


@pytest.mark.parametrize(("sql", "constraint"), [
    ("UPDATE program SET pending_days = 91, revision = revision + 1",
     "ck_program_pending_days_range"),
    ("UPDATE program SET expiration_mode = 'inactivity', expiration_months = 13,"
     " expiration_percentage = 5, revision = revision + 1", "ck_program_expiration_shape"),
    ("UPDATE program SET expiration_mode = 'lots', revision = revision + 1",
     "ck_program_expiration_shape"),
    ("UPDATE program SET expiration_months = 61, revision = revision + 1",
     "ck_program_expiration_months_range"),
    ("UPDATE program SET expiration_percentage = 0, revision = revision + 1",
     "ck_program_expiration_percentage_range"),
    ("UPDATE program SET tiers_status = 'ON', revision = revision + 1",
     "ck_program_tiers_status_known"),
    ("UPDATE program SET rolling_window_months = 37, revision = revision + 1",
     "ck_program_rolling_window_range"),
    ("UPDATE program SET pending_days = 5", "program_revision_step"),
    ("UPDATE program SET pending_days = 5, revision = revision + 2", "program_revision_step"),
])
def test_database_refuses_out_of_bounds(raw: psycopg.Connection, sql: str,
                                        constraint: str) -> None:
    assert refused(raw, sql) == constraint


def test_one_row_only(raw: psycopg.Connection, raw_owner: psycopg.Connection) -> None:
    assert "permission denied" in denied(raw, "INSERT INTO program (id) VALUES (2)")
    assert "permission denied" in denied(raw, "DELETE FROM program")
    assert refused(raw_owner, "INSERT INTO program (id) VALUES (2)") == "ck_program_one_row"
