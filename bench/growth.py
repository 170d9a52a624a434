"""A ledger grown as the worker would have grown it, and what a drain costs at each size.

`grow` writes order EARNs as the batch path writes them: a time-ordered entry id, a
producer's random event id (a UUIDv4, as `loyalty.publish` makes), the matching
`processed_events` row with its payload, the point lot and the kept totals. It writes
set-based with the triggers off (a bench shortcut), in chunks, and keeps every chain
(balance, revision, totals, lots) as the database checks them, so that the next drain's
triggers and the closing `verify` see a ledger they accept.

`measure` wraps one drain with what shows where its time goes: WAL records, full-page
images and bytes per event (`pg_stat_wal`), the statements that cost most
(`pg_stat_statements`, with their buffers and WAL), plans with buffers of sampled statements
(auto_explain, i.e. `EXPLAIN (ANALYZE, BUFFERS)` of the worker's own statements), and the
size of each table and index.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

#: A UUIDv7 (RFC 9562) at a given time, as `loyalty.ledger.entries.entry_id` makes them.
UUID7_AT = """
CREATE OR REPLACE FUNCTION pg_temp.uuid7_at(ts timestamptz) RETURNS uuid LANGUAGE sql AS $$
  SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
         PLACING substring(int8send((extract(epoch FROM ts) * 1000)::bigint) FROM 3)
         FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$"""

GROW_CHUNK = """
WITH a AS (
    SELECT id, contact_id, balance, revision, row_number() OVER (ORDER BY id) - 1 AS ix
    FROM accounts
), g AS (
    SELECT g, ix, amount, ts, EVENT_ID_SQL AS event_id FROM (
        SELECT g, g %% %(accounts)s AS ix, 1 + (g * 7919) %% 199 AS amount,
               now() - make_interval(secs => (%(target)s - g) * 0.01) AS ts
        FROM generate_series(CAST(%(start)s AS bigint), %(stop)s - 1) g
    ) s
), e AS (
    INSERT INTO ledger_entries (id, account_id, type, amount, balance_after, description,
        idempotency_key, event_type, event_id, order_id, rule_id, rule_revision,
        account_revision, order_total, currency, created_at)
    SELECT pg_temp.uuid7_at(g.ts), a.id, 'EARN', g.amount,
           a.balance + sum(g.amount) OVER (PARTITION BY a.id ORDER BY g.g),
           'Order grow-' || g.g, 'event:' || g.event_id, 'order.completed', g.event_id,
           'grow-' || g.g, %(rule)s, %(revision)s,
           a.revision + row_number() OVER (PARTITION BY a.id ORDER BY g.g),
           g.amount + 0.42, 'USD', g.ts
    FROM g JOIN a USING (ix)
    ORDER BY g.g
    RETURNING id, account_id, amount, event_id, order_id, created_at
), p AS (
    INSERT INTO processed_events (event_id, event_type, fingerprint, contact_id, account_id,
        order_id, outcome, points, ledger_entry_id, processed_at, payload)
    SELECT e.event_id, 'order.completed', md5(e.event_id), a.contact_id, e.account_id,
           e.order_id, 'earned', e.amount, e.id, e.created_at,
           jsonb_build_object('event_id', e.event_id, 'contact_id', a.contact_id,
                              'order_id', e.order_id, 'total', (e.amount + 0.42)::text,
                              'currency', 'USD', 'occurred_at', e.created_at)
    FROM e JOIN accounts a ON a.id = e.account_id
    RETURNING 1
), l AS (
    INSERT INTO point_lots (account_id, entry_id, amount, remaining, available_at, created_at)
    SELECT account_id, id, amount, amount, created_at, created_at FROM e
    RETURNING 1
)
SELECT (SELECT count(*) FROM p), (SELECT count(*) FROM l)
"""

SETTLE_ACCOUNTS = """
WITH last AS (
    SELECT DISTINCT ON (account_id) account_id, balance_after, account_revision
    FROM ledger_entries WHERE seq > %(seq)s ORDER BY account_id, seq DESC
), sums AS (
    SELECT account_id, sum(amount) AS earned FROM ledger_entries
    WHERE type = 'EARN' AND order_id LIKE 'grow-%%' AND seq > %(seq)s GROUP BY account_id
), t AS (
    UPDATE ledger_totals t SET earned = t.earned + s.earned FROM sums s
    WHERE t.account_id = s.account_id
    RETURNING t.account_id
), missing AS (
    INSERT INTO ledger_totals (account_id, earned)
    SELECT s.account_id, s.earned FROM sums s
    WHERE NOT EXISTS (SELECT 1 FROM ledger_totals x WHERE x.account_id = s.account_id)
    RETURNING 1
)
UPDATE accounts a SET balance = last.balance_after, revision = last.account_revision,
    earned = a.earned + s.earned
FROM last JOIN sums s USING (account_id)
WHERE a.id = last.account_id
"""

#: What the grown lots hold, where the database keeps it per account (0013).
SETTLE_LOT_TOTALS = """
INSERT INTO lot_totals AS t (account_id, available)
SELECT account_id, sum(amount) FROM ledger_entries
WHERE type = 'EARN' AND order_id LIKE 'grow-%%' AND seq > %(seq)s GROUP BY account_id
ON CONFLICT (account_id) DO UPDATE SET available = t.available + EXCLUDED.available
"""


def grow(dsn: str, target: int, chunk: int = 1_000_000, time_ordered: bool = False) -> int:
    """Grow the ledger to `target` entries, with random event ids or, `time_ordered`,
    UUIDv7 ones at each entry's time; returns how many entries it holds."""
    statement = GROW_CHUNK.replace(
        "EVENT_ID_SQL", "pg_temp.uuid7_at(ts)::text" if time_ordered else "gen_random_uuid()::text")
    with psycopg.connect(dsn, autocommit=True) as conn:
        (accounts,) = conn.execute("SELECT count(*) FROM accounts").fetchone()
        (rule, revision) = conn.execute(
            "SELECT id, revision FROM earn_rules WHERE trigger = 'order.completed'"
            " ORDER BY id LIMIT 1").fetchone()
        conn.execute(UUID7_AT)
        (have,) = conn.execute("SELECT count(*) FROM ledger_entries").fetchone()
        # `lot_totals` (migration 0013) exists from the commit that added it on.
        (kept_lots,) = conn.execute("SELECT to_regclass('lot_totals') IS NOT NULL").fetchone()
        started = time.perf_counter()
        while have < target:
            stop = min(target, have + chunk)
            with conn.transaction():
                conn.execute("SET LOCAL session_replication_role = replica")
                conn.execute("SET LOCAL synchronous_commit = off")
                (seq,) = conn.execute(
                    "SELECT COALESCE(max(seq), 0) FROM ledger_entries").fetchone()
                conn.execute(statement, {"accounts": accounts, "start": have, "stop": stop,
                                          "target": target, "rule": rule,
                                          "revision": revision})
                conn.execute(SETTLE_ACCOUNTS, {"seq": seq})
                if kept_lots:
                    conn.execute(SETTLE_LOT_TOTALS, {"seq": seq})
            have = stop
            print(f"  grown to {have:,} entries ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr)
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
        return int(conn.execute("SELECT count(*) FROM ledger_entries").fetchone()[0])


class Measured:
    """The cost figures of one drain: reset before, read after."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.log_offset = 0
        self.updates: dict[str, tuple[int, int]] = {}
        self.lsn = "0/0"

    def start(self, log_text: str) -> None:
        self.updates = _stat_updates(self.dsn)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self.lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
            conn.execute("SELECT pg_stat_reset_shared('wal')")
            conn.execute("SELECT pg_stat_reset_shared('bgwriter')")
            conn.execute("ALTER SYSTEM SET auto_explain.log_min_duration = 0")
            conn.execute("ALTER SYSTEM SET auto_explain.sample_rate = 0.25")
            conn.execute("SELECT pg_reload_conf()")
        self.log_offset = len(log_text)

    def finish(self, events: int, log_text: str) -> dict[str, Any]:
        """Read after the workers have stopped: a backend sends its WAL and table counters
        at exit (a busy one at most once a second), and the WAL position is exact."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            wal_bytes = conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn",
                                     (self.lsn,)).fetchone()[0]
            conn.execute("ALTER SYSTEM RESET auto_explain.log_min_duration")
            conn.execute("ALTER SYSTEM RESET auto_explain.sample_rate")
            conn.execute("SELECT pg_reload_conf()")
            wal = conn.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"
                               ).fetchone()
            checkpoints = conn.execute(
                "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter").fetchone()[0]
            top = conn.execute(
                "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 90), calls,"
                " round(total_exec_time::numeric, 1), shared_blks_hit, shared_blks_read,"
                " shared_blks_dirtied, wal_fpi, wal_bytes"
                " FROM pg_stat_statements WHERE query !~* '^(BEGIN|COMMIT|SELECT pg_)'"
                " ORDER BY total_exec_time DESC LIMIT 8").fetchall()
            sizes = conn.execute(
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
                " AND pg_relation_size(c.oid) > 8 * 1024 * 1024"
                " ORDER BY 2 DESC").fetchall()
        updates = _stat_updates(self.dsn)
        return {
            # Updates of the rows each batch changes, and how many were HOT (no index entry
            # written, the new version on the same page).
            "hot_updates": {name: f"{hot - self.updates[name][1]} of {n - self.updates[name][0]}"
                            for name, (n, hot) in updates.items() if name in self.updates},
            "wal_records_per_event": round(wal[0] / events, 2),
            "wal_fpi_per_event": round(wal[1] / events, 3),
            "wal_bytes_per_event": round(int(wal_bytes) / events),
            "checkpoints_during_drain": checkpoints,
            "top_statements": [
                {"query": q, "calls": c, "total_ms": float(t), "per_event_ms":
                 round(float(t) / events, 4), "blks_hit": h, "blks_read": r, "blks_dirtied": d,
                 "wal_fpi": f, "wal_bytes": int(w)} for q, c, t, h, r, d, f, w in top],
            "sizes_mb": {name: round(size / 2**20) for name, size in sizes},
            "plans": ledger_plans(log_text[self.log_offset:]),
        }


def _stat_updates(dsn: str) -> dict[str, tuple[int, int]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute(
            "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
            " WHERE relname IN ('accounts', 'ledger_totals', 'lot_totals', 'point_lots')"
        ).fetchall()
    return {name: (int(n), int(hot)) for name, n, hot in rows}


def ledger_plans(log: str, keep: int = 2) -> list[str]:
    """The slowest sampled plans of the ledger INSERT, as auto_explain logged them."""
    blocks = re.split(r"\n(?=\S+ \S+ \S+ \[\d+\] LOG:  duration:)", log)
    found = []
    for block in blocks:
        if "Insert on ledger_entries" in block:
            match = re.search(r"duration: ([\d.]+) ms", block)
            found.append((float(match.group(1)) if match else 0.0, block.strip()))
    found.sort(reverse=True)
    return [block for _, block in found[:keep]]


def tree_cpu_seconds(roots: list[int]) -> float:
    """User and system CPU seconds of these processes and all their descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    wanted, total = set(roots), 0.0
    changed = True
    while changed:
        changed = False
        for pid, (parent, _) in stats.items():
            if parent in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    for pid in wanted:
        if pid in stats:
            total += stats[pid][1]
    return total
