"""What operators read about the running system: reachability and the state behind the
metrics gauges (dead letters, outbox backlog, webhook deliveries), in one read."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, text

from loyalty.ledger import outbox, webhooks
from loyalty.ledger.boundary import read


def operations_state(engine: Engine) -> dict[str, Any]:
    def work(conn: Connection) -> dict[str, Any]:
        letters = conn.execute(text("SELECT reason, status, count(*) FROM public.dead_letters"
                                    " GROUP BY reason, status")).all()
        return {
            "dead_letters": {(reason, status): int(n) for reason, status, n in letters},
            "outbox": outbox.backlog(conn),
            "webhooks": webhooks.counts(conn),
        }

    return read(engine, work)
