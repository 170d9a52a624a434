"""Event streams for the end-to-end tests, and ways to watch them land."""

from __future__ import annotations

import json
import os
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import psycopg
from celery import Celery
from kombu import Connection, Queue
from sqlalchemy.engine import make_url

from tests.e2e.conftest import Env

TS = "2026-01-31T12:00:00Z"


def shop(env: Env) -> Celery:
    """What a producer in another code base has: Celery, a broker URL and nothing of ours.

    One client per deployment, closed with it, so no socket outlives its test.
    """
    if env.shop is None or env.shop.conf.broker_url != env.broker_url:
        if env.shop is not None:
            env.shop.close()
        app = Celery("shop", broker=env.broker_url, backend=env.result_backend,
                     set_as_current=False)
        app.conf.update(task_serializer="json", accept_content=["json"],
                        result_accept_content=["json"])
        env.shop = app
    return env.shop


def send_raw(env: Env, body: bytes | str, content_type: str, headers: dict[str, Any],
             encoding: str = "utf-8", queue: str = "loyalty.events") -> None:
    """Publish bytes with whatever headers, as a broken or hostile producer would."""
    with Connection(env.broker_url) as conn:
        conn.Producer().publish(body, routing_key=queue, content_type=content_type,
                                content_encoding=encoding, headers=headers, serializer=None,
                                declare=[Queue(queue)], retry=True)


def sql(env: Env, query: str, *params: Any) -> list[tuple]:
    url = make_url(env.db_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database,
                         autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def processed(env: Env) -> int:
    return int(sql(env, "SELECT count(*) FROM processed_events")[0][0])


def letters_by_message(env: Env) -> dict[str, str]:
    return {m: r for m, r in sql(env, "SELECT message_id, reason FROM dead_letters")}


def balances(env: Env) -> dict[str, int]:
    return dict(sql(env, "SELECT contact_id, balance FROM accounts"))


@dataclass
class Stream:
    """Signups and orders with duplicates and re-sends, and the balances they must give."""

    contacts: int
    orders: int
    seed: int = 7
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        names = [f"{self.prefix}-c{i}" for i in range(self.contacts)]
        expected: dict[str, int] = defaultdict(int)
        signups = [("loyalty.events.signup", {"event_id": f"{self.prefix}-su-{c}",
                                              "contact_id": c, "occurred_at": TS})
                   for c in names]
        for c in names:
            expected[c] += 100
        orders = []
        for i in range(self.orders):
            contact = rng.choice(names)
            total = Decimal(rng.randrange(0, 20000)) / 100
            orders.append(("loyalty.events.order_completed", {
                "event_id": f"{self.prefix}-oe-{i}", "contact_id": contact,
                "order_id": f"{self.prefix}-o-{i}", "total": str(total), "currency": "USD",
                "occurred_at": TS}))
            expected[contact] += int(total.to_integral_value(ROUND_FLOOR))
        duplicates = rng.sample(orders, len(orders) // 10)
        resent = [(n, {**p, "event_id": p["event_id"] + "-resent"})
                  for n, p in rng.sample(orders, len(orders) // 20)]
        later = orders + duplicates + resent
        rng.shuffle(later)
        self.signups = signups
        self.messages = signups + later
        self.distinct_events = len(signups) + len(orders) + len(resent)
        self.expected = dict(expected)

    def expected_given(self, applied: set[str]) -> dict[str, int]:
        """Balances if exactly the events in `applied` were applied (an order earns once)."""
        balances: dict[str, int] = {}
        earned_orders: set[str] = set()
        for name, payload in self.messages:
            if payload["event_id"] not in applied:
                continue
            contact = payload["contact_id"]
            if name.endswith("signup"):
                balances[contact] = balances.get(contact, 0) + 100
            elif payload["order_id"] not in earned_orders:
                earned_orders.add(payload["order_id"])
                points = int(Decimal(payload["total"]).to_integral_value(ROUND_FLOOR))
                balances[contact] = balances.get(contact, 0) + points
        return balances

    def publish(self, env: Env, messages: list[tuple[str, dict[str, Any]]] | None = None) -> None:
        client = shop(env)
        for name, payload in messages if messages is not None else self.messages:
            client.send_task(name, args=[payload], queue="loyalty.events",
                             retry=True, retry_policy={"max_retries": 30, "interval_start": 0.2,
                                                       "interval_step": 0.5, "interval_max": 2})


def dumps(value: Any) -> str:
    return json.dumps(value)


def record_outcome(env: Env, stream: Stream) -> dict[str, int]:
    """Events lost and contacts paid twice in this run; bench/soak.py reads them.

    Lost: events of the stream never applied. Doubled: contacts whose balance is above
    what exactly the applied events give (the database refuses a second EARN for one
    order, so this should stay 0 by construction). Appended as one JSON line to the file
    that LOYALTY_TEST_OUTCOME names, when it is set.
    """
    applied = {event_id for (event_id,) in sql(env, "SELECT event_id FROM processed_events")}
    lost = len({payload["event_id"] for _n, payload in stream.messages} - applied)
    given = stream.expected_given(applied)
    doubled = sum(1 for contact, balance in balances(env).items()
                  if balance > given.get(contact, 0))
    outcome = {"lost": lost, "doubled": doubled}
    path = os.environ.get("LOYALTY_TEST_OUTCOME")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", ""),
                                     **outcome}) + "\n")
    return outcome
