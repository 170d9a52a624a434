"""Cost that stays flat as the ledger grows (issue 14; measured in docs/scaling.md).

- **`lot_totals`**: per account, what its available and its pending lots hold, kept by
  statement triggers on `point_lots` (SECURITY DEFINER; the application role reads it and
  writes none of it). The COMMIT check `point_lots_match_balance` now compares the
  balance with this row, one primary-key read, where it summed every open lot of the
  account: twice per applied order, a cost that grew with each customer's history. It
  fires for each account whose kept row changed (`lot_totals_match_balance`), which every
  change to what lots hold does, instead of for each lot.
  `verify` still sums the lots themselves (`lot_totals_equal_lots`).
- **Trigger functions plan without sequential scans** (`SET enable_seqscan = off` on each
  function that looks rows up by key). PL/pgSQL caches a statement's plan per connection
  from its first call; a plan made while a table was nearly empty scanned the whole table
  for every batch from then on, until autovacuum's next ANALYZE invalidated it. Every
  lookup these functions make has its index, so the setting only rules out that plan.
- **Time-ordered ids**: `loyalty_uuid7()` (RFC 9562 UUIDv7, as the worker already makes
  for the entries it writes) is the default id of ledger entries, outbox events and
  redemptions. A random UUID key puts each new row on a random page of its primary key's
  B-tree: one page read, dirtied and, after each checkpoint, written whole to the WAL.
- **`uq_ledger_entries_refunds_entry_id` is partial**: only a REFUND names the REDEEM it
  gives back; the index held a NULL for every other entry.

On an existing ledger the upgrade builds that index and sums every lot once, holding off
writes to the ledger and the lots meanwhile: run it while the workers are stopped.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SAFE = "SET search_path = pg_catalog, pg_temp"

UUID7 = f"""
    CREATE FUNCTION public.loyalty_uuid7() RETURNS uuid
    LANGUAGE sql VOLATILE PARALLEL SAFE {SAFE} AS $$
        SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
               PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp())
                                                * 1000)::bigint) FROM 3)
               FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
    $$"""

#: Per-account sums of lots by status, from a statement's transition tables.
LOT_SUMS = """
    SELECT account_id,
           COALESCE(sum(remaining) FILTER (WHERE status = 'available'), 0) AS available,
           COALESCE(sum(remaining) FILTER (WHERE status = 'pending'), 0) AS pending
    FROM {rows} GROUP BY account_id"""
KEEP_LOT_TOTALS = f"""
    CREATE FUNCTION public.loyalty_lot_totals() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO public.lot_totals AS t (account_id, available, pending)
            SELECT * FROM ({LOT_SUMS.format(rows="new_rows")}) s ORDER BY account_id
            ON CONFLICT (account_id) DO UPDATE
            SET available = t.available + EXCLUDED.available,
                pending = t.pending + EXCLUDED.pending;
        ELSIF TG_OP = 'UPDATE' THEN
            WITH n AS ({LOT_SUMS.format(rows="new_rows")}),
                 o AS ({LOT_SUMS.format(rows="old_rows")}),
                 d AS (SELECT COALESCE(n.account_id, o.account_id) AS account_id,
                              COALESCE(n.available, 0) - COALESCE(o.available, 0) AS available,
                              COALESCE(n.pending, 0) - COALESCE(o.pending, 0) AS pending
                       FROM n FULL JOIN o ON o.account_id = n.account_id)
            -- Every lot was inserted first, so its account has its row: a plain UPDATE
            -- (an upsert would check the CHECK on a negative change before the conflict).
            UPDATE public.lot_totals t SET available = t.available + d.available,
                                           pending = t.pending + d.pending
            FROM d WHERE t.account_id = d.account_id
              AND (d.available <> 0 OR d.pending <> 0);
        ELSE
            UPDATE public.lot_totals t SET available = t.available - s.available,
                                           pending = t.pending - s.pending
            FROM ({LOT_SUMS.format(rows="old_rows")}) s WHERE t.account_id = s.account_id;
        END IF;
        RETURN NULL;
    END $$"""

#: `loyalty_lots_match_balance`, with the query that finds what the lots hold.
MATCH_BALANCE = """
    CREATE OR REPLACE FUNCTION public.loyalty_lots_match_balance() RETURNS trigger
    LANGUAGE plpgsql {safe} AS $$
    DECLARE
        account uuid;
        balance bigint;
        held bigint;
    BEGIN
        IF TG_OP = 'DELETE' THEN
            account := (to_jsonb(OLD) ->> TG_ARGV[0])::uuid;
        ELSE
            account := (to_jsonb(NEW) ->> TG_ARGV[0])::uuid;
        END IF;
        SELECT a.balance INTO balance FROM public.accounts a WHERE a.id = account;
        {held}
        IF balance IS DISTINCT FROM held THEN
            RAISE EXCEPTION 'account % has a balance of % but its available lots hold %',
                account, balance, held
                USING ERRCODE = 'check_violation', CONSTRAINT = 'point_lots_match_balance';
        END IF;
        RETURN NULL;
    END $$"""
MATCH_FROM_TOTALS = MATCH_BALANCE.format(safe=SAFE, held="""
        -- What the account's available lots hold, as the lots' own triggers keep it.
        SELECT t.available INTO held FROM public.lot_totals t WHERE t.account_id = account;
        held := COALESCE(held, 0);""")
#: As 0011 wrote it, for the downgrade.
MATCH_BY_SUM = MATCH_BALANCE.format(safe=SAFE, held="""
        -- `remaining > 0`: what is used up adds nothing, and the partial index has the rest.
        SELECT COALESCE(sum(l.remaining), 0) INTO held FROM public.point_lots l
        WHERE l.account_id = account AND l.remaining > 0 AND l.status = 'available';""")

#: Trigger functions whose every lookup is by key (see the module docstring).
KEYED_LOOKUPS = (
    "loyalty_ledger_statement_checks", "loyalty_ledger_lots", "loyalty_ledger_totals",
    "loyalty_ledger_refund_checks", "loyalty_reversal_checks", "loyalty_outbox_points_updated",
    "loyalty_balance_matches_ledger", "loyalty_lots_match_balance",
    "loyalty_reversed_matches_ledger", "loyalty_entry_has_redemption", "loyalty_lot_totals",
    "loyalty_outbox_tier_changed", "loyalty_redemption_matches_entries",
)
TIME_ORDERED_IDS = ("ledger_entries", "outbox_events", "redemptions")


def upgrade() -> None:
    op.execute(UUID7)
    for table in TIME_ORDERED_IDS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT public.loyalty_uuid7()")

    op.execute("ALTER TABLE ledger_entries DROP CONSTRAINT uq_ledger_entries_refunds_entry_id")
    op.execute("CREATE UNIQUE INDEX uq_ledger_entries_refunds_entry_id"
               " ON ledger_entries (refunds_entry_id) WHERE refunds_entry_id IS NOT NULL")

    op.execute("""
        CREATE TABLE lot_totals (
            account_id uuid NOT NULL,
            available bigint NOT NULL DEFAULT 0,
            pending bigint NOT NULL DEFAULT 0,
            CONSTRAINT pk_lot_totals PRIMARY KEY (account_id),
            CONSTRAINT fk_lot_totals_account_id_accounts FOREIGN KEY (account_id)
                REFERENCES accounts (id),
            CONSTRAINT ck_lot_totals_not_negative CHECK (available >= 0 AND pending >= 0)
        )""")
    op.execute(f"""
        INSERT INTO lot_totals (account_id, available, pending)
        {LOT_SUMS.format(rows="point_lots")} ORDER BY account_id""")
    op.execute(KEEP_LOT_TOTALS)
    for event, tables in (("INSERT", "NEW TABLE AS new_rows"),
                          ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                          ("DELETE", "OLD TABLE AS old_rows")):
        op.execute(f"""
            CREATE TRIGGER point_lots_totals_{event.lower()} AFTER {event} ON point_lots
            REFERENCING {tables} FOR EACH STATEMENT
            EXECUTE FUNCTION public.loyalty_lot_totals()""")
    op.execute(MATCH_FROM_TOTALS)
    # Checked once per account whose kept total changed, not once per lot: every change
    # to what lots hold changes the row.
    op.execute("DROP TRIGGER point_lots_match_balance ON point_lots")
    op.execute("""
        CREATE CONSTRAINT TRIGGER lot_totals_match_balance
            AFTER INSERT OR UPDATE OR DELETE ON lot_totals DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION public.loyalty_lots_match_balance('account_id')""")
    for name in KEYED_LOOKUPS:
        op.execute(f"ALTER FUNCTION public.{name}() SET enable_seqscan = off")


def downgrade() -> None:
    for name in KEYED_LOOKUPS:
        if name != "loyalty_lot_totals":
            op.execute(f"ALTER FUNCTION public.{name}() RESET enable_seqscan")
    op.execute("DROP TRIGGER lot_totals_match_balance ON lot_totals")
    op.execute("""
        CREATE CONSTRAINT TRIGGER point_lots_match_balance
            AFTER INSERT OR UPDATE OR DELETE ON point_lots DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION public.loyalty_lots_match_balance('account_id')""")
    op.execute(MATCH_BY_SUM)
    for event in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER point_lots_totals_{event} ON point_lots")
    op.execute("DROP FUNCTION public.loyalty_lot_totals()")
    op.execute("DROP TABLE lot_totals")
    op.execute("DROP INDEX uq_ledger_entries_refunds_entry_id")
    op.execute("ALTER TABLE ledger_entries ADD CONSTRAINT uq_ledger_entries_refunds_entry_id"
               " UNIQUE (refunds_entry_id)")
    for table in TIME_ORDERED_IDS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT gen_random_uuid()")
    op.execute("DROP FUNCTION public.loyalty_uuid7()")
