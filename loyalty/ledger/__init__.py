"""The ledger: the one package that talks SQL to the ledger database.

Every write is one unit of work in one PostgreSQL transaction (`boundary`): the
idempotency record, the ledger entry and the account's cached points commit
together or not at all, and driver errors leave as `loyalty.errors` exceptions.

A room per concept:

- `boundary`: transactions, savepoints, driver errors translated once;
- `statements`: the set-based SQL the writers share;
- `entries`: what an earn writes and reports (`EventOutcome`), and its ceilings;
- `earning`: events (signups, orders) turned into EARN entries, as batches; `earn_writes`:
  what a unit of earning writes, one statement per table;
- `adjusting`: staff adjustments (ADJUST entries);
- `staff_requests`: the first result of every staff request, returned to its repeats;
- `enrolment`: accounts opened by staff; `granting`: staff earns (EARN, no rule);
- `rewards`: the rewards catalogue; `redeeming`: redemptions (REDEEM entries) and their
  refunds (REFUND entries); `staff_entries`: the account-then-entry write they share;
- `accounts`: account locks, reads and pages of accounts, entries and events;
- `earn_rules`: the rules earning follows, and their changes;
- `reversing`: order refunds turned into REVERSE entries, set-based like earning;
- `dead_letters`: messages kept unapplied, and their replay;
- `crashes`: how often a message took its worker process down;
- `verify`: every invariant checked again across the database;
- `facade`: `Ledger`, one object over all of the above.

Rooms still to come, beside these: `expiring` (EXPIRE entries) and `tiers`. Each writes its
entry type through `statements` and runs inside `boundary`, as `earning` does.
"""

from loyalty.ledger.boundary import LedgerIntegrityError
from loyalty.ledger.entries import EventOutcome
from loyalty.ledger.facade import Ledger

__all__ = ["EventOutcome", "Ledger", "LedgerIntegrityError"]
