"""Outgoing events end to end: a real worker applies a stream, a real relay (`loyalty relay`)
sends what committed to a webhook receiver inside the test and to a queue bound to
`loyalty.notifications`; and a relay killed between publishing and marking delivered."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from kombu import Connection, Exchange, Queue
from standardwebhooks import Webhook

from loyalty import db
from loyalty.ledger import Ledger
from tests.conftest import connect, superuser_url
from tests.e2e.conftest import LOYALTY, Env, wait_for
from tests.e2e.streams import Stream, shop, sql
from tests.integration.test_ledger import signup

pytestmark = pytest.mark.e2e


class Receiver:
    """A webhook endpoint on 127.0.0.1 that refuses the first attempt of every third event
    it sees, and keeps what it accepted, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[str] = []
        self.accepted: list[tuple[dict[str, str], str]] = []
        self.refused = 0
        #: Called as each request arrives, before it is answered.
        self.on_request: Callable[[], Any] | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"])).decode()
                event_id = self.headers["webhook-id"]
                if receiver.on_request is not None:
                    receiver.on_request()
                with receiver.lock:
                    first = event_id not in receiver.seen
                    if first:
                        receiver.seen.append(event_id)
                    refuse = first and len(receiver.seen) % 3 == 0
                    if refuse:
                        receiver.refused += 1
                    else:
                        receiver.accepted.append((dict(self.headers.items()), body))
                self.send_response(503 if refuse else 204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/loyalty"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def bind_queue(env: Env, name: str) -> Queue:
    """What any service does: a queue of its own bound to the exchange, every event type."""
    queue = Queue(name, Exchange("loyalty.notifications", type="topic", durable=True),
                  routing_key="#", durable=True)
    with Connection(env.broker_url) as conn:
        queue(conn.default_channel).declare()
    return queue


def drain(env: Env, queue: Queue) -> list[tuple[str, dict[str, Any]]]:
    """Every message on the queue: (message_id property, JSON body)."""
    got: list[tuple[str, dict[str, Any]]] = []
    with Connection(env.broker_url) as conn:
        bound = queue(conn.default_channel)
        while (message := bound.get(no_ack=True)) is not None:
            assert message.content_type == "application/json"
            got.append((message.properties.get("message_id"), json.loads(message.body)))
    return got


class Relay:
    def __init__(self, env: Env) -> None:
        self.log = env.tmp / "relay.log"
        with self.log.open("ab") as handle:
            self.proc = subprocess.Popen([LOYALTY, "relay"], env=env.vars, stdout=handle,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)


def outbox_ids(env: Env) -> list[str]:
    return [str(r[0]) for r in sql(env, "SELECT id FROM outbox_events ORDER BY position")]


def in_order(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Each account's revisions in the order its events arrived."""
    per_account: dict[str, list[int]] = defaultdict(list)
    for event in events:
        per_account[event["account_id"]].append(int(event["data"]["revision"]))
    return per_account


@pytest.mark.parametrize("broker", ["rabbitmq", "redis"])
def test_committed_changes_reach_webhooks_and_the_exchange_in_order(
        deploy: Any, receiver: Receiver, broker: str) -> None:
    env = deploy(broker, webhook_allow_private="1", webhook_backoff="0.2",
                 webhook_backoff_max="1", relay_interval_ms="50", not_found_retries="1",
                 not_found_backoff="0.2")
    queue = bind_queue(env, "shop-notifications")
    hook = env.cli_json("webhooks", "add", "--url", receiver.url)
    assert hook["secret"].startswith("whsec_") and hook["all_event_types"] is True
    worker = env.worker()
    relay = Relay(env)
    try:
        stream = Stream(contacts=25, orders=80, seed=13)
        stream.publish(env, stream.signups)
        wait_for(lambda: len(sql(env, "SELECT 1 FROM accounts")) == 25, 60, "25 accounts")
        stream.publish(env, [m for m in stream.messages if m not in stream.signups])
        client = shop(env)
        contacts = sorted({p["contact_id"] for _, p in stream.signups})
        for i, contact in enumerate(contacts[:10]):
            # Staff adjustments; the odd ones take more than the balance and are rejected:
            # a change that never commits sends nothing.
            amount = 5 if i % 2 == 0 else -10**6
            client.send_task("loyalty.accounts.adjust_points", args=[{
                "request_id": f"adj-{i}", "contact_id": contact, "amount": amount,
                "description": "e2e", "actor": "ops"}], queue="loyalty.admin")
        wait_for(lambda: len(sql(env, "SELECT 1 FROM staff_requests")) == 10, 60,
                 "10 adjustments")
        wait_for(lambda: sql(env, "SELECT count(*) FROM processed_events")[0][0]
                 == stream.distinct_events, 60, "every event applied")
        wait_for(lambda: not sql(env, "SELECT 1 FROM outbox_events WHERE delivered_at IS NULL")
                 and not sql(env, "SELECT 1 FROM webhook_deliveries WHERE status <> 'delivered'"),
                 60, "every event delivered")
    finally:
        relay.stop()
        worker.stop()

    # Exactly the committed changes: an account.created per account, an
    # account.points_updated per ledger entry, none for the rejected adjustments.
    entries = {str(r[0]) for r in sql(env, "SELECT id FROM ledger_entries")}
    expected = outbox_ids(env)
    assert len(expected) == 25 + len(entries)
    assert sql(env, "SELECT count(*) FROM staff_requests WHERE status = 'rejected'")[0][0] == 5

    # Webhooks: each event accepted once, signed, in its account's order; every third
    # event's first attempt was refused and retried.
    secret = Webhook(hook["secret"])
    accepted = [secret.verify(body, headers) for headers, body in receiver.accepted]
    assert sorted(e["id"] for e in accepted) == sorted(expected)
    assert {headers["webhook-id"] for headers, _ in receiver.accepted} == set(expected)
    assert receiver.refused == len(expected) // 3
    points = [e for e in accepted if e["type"] == "account.points_updated"]
    assert {e["data"]["transaction_id"] for e in points} == entries
    for revisions in in_order(accepted).values():
        assert revisions == list(range(1, len(revisions) + 1))
    deliveries = env.cli_json("webhooks", "deliveries", "--limit", "1000")["items"]
    assert sum(d["attempts"] for d in deliveries) == len(expected) + receiver.refused

    # The exchange: the same events, once each, in each account's order.
    published = drain(env, queue)
    assert [m for m, _ in published] == [e["id"] for _, e in published]
    assert sorted(m for m, _ in published) == sorted(expected)
    for revisions in in_order([e for _, e in published]).values():
        assert revisions == list(range(1, len(revisions) + 1))
    by_id = {e["id"]: e for e in accepted}
    assert all(by_id[e["id"]] == e for _, e in published)


def test_a_relay_killed_before_marking_delivered_sends_again_with_the_same_id(
        deploy: Any) -> None:
    """The relay publishes, then blocks on its next statement (a lock the test holds);
    SIGKILL it there. The next relay publishes the same events again, same ids, and
    nothing is lost."""
    env = deploy("rabbitmq")
    queue = bind_queue(env, "shop-notifications")
    ledger = Ledger(db.get_engine(env.db_url))
    ledger.apply_events([signup(f"k{i}") for i in range(5)])
    db.dispose_all()
    expected = outbox_ids(env)
    assert len(expected) == 10
    blocker = connect(superuser_url(env.db_url))
    blocker.autocommit = False
    blocker.execute("LOCK TABLE webhook_deliveries IN SHARE MODE")  # blocks the fan-out
    relay = Relay(env)
    first: list[str] = []

    def published() -> bool:
        first.extend(m for m, _ in drain(env, queue))
        return len(first) >= 10

    try:
        wait_for(published, 60, "the first publish")
        relay.stop(signal.SIGKILL)
    finally:
        blocker.rollback()
        blocker.close()
    assert sorted(first) == sorted(expected)
    assert len(sql(env, "SELECT 1 FROM outbox_events WHERE delivered_at IS NULL")) == 10
    env.cli("relay", "--once")
    again = [m for m, _ in drain(env, queue)]
    assert sorted(again) == sorted(expected)  # the same ids: a consumer drops them
    assert not sql(env, "SELECT 1 FROM outbox_events WHERE delivered_at IS NULL")


def test_health_reports_each_check(deploy: Any) -> None:
    env = deploy("redis")
    env.vars["LOYALTY_HEARTBEAT_FILE"] = str(env.tmp / "no-such-heartbeat")
    done = env.cli("health", "--json", check=False)
    report = json.loads(done.stdout)
    assert done.returncode == 1
    assert report["checks"]["database"] == {"ok": True}
    assert report["checks"]["broker"] == {"ok": True}
    assert report["checks"]["migrations"]["ok"] is True
    assert report["checks"]["heartbeat"]["ok"] is False
    heartbeat = env.tmp / "worker.heartbeat"
    env.vars["LOYALTY_HEARTBEAT_FILE"] = str(heartbeat)
    worker = env.worker()
    try:
        wait_for(heartbeat.exists, 30, "the heartbeat file")
        report = env.cli_json("health")
        assert report["ok"] is True and report["checks"]["heartbeat"]["ok"] is True
    finally:
        worker.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_count_what_the_pool_applies(deploy: Any) -> None:
    port = free_port()
    env = deploy("redis", metrics_port=str(port))
    env.vars["LOYALTY_METRICS_DIR"] = str(env.tmp / "metrics")
    worker = env.worker(concurrency=2)
    try:
        stream = Stream(contacts=6, orders=0, seed=3)
        stream.publish(env, stream.signups)
        wait_for(lambda: scrape(port).get(
            'loyalty_events_applied_total{outcome="earned",type="signup"}') == 6, 60,
            "6 signups counted")
        more = Stream(contacts=4, orders=0, seed=4)
        more.publish(env, more.signups)
        wait_for(lambda: scrape(port).get(
            'loyalty_events_applied_total{outcome="earned",type="signup"}') == 10, 60,
            "10 signups counted")
        samples = scrape(port)
        assert samples["loyalty_batch_size_count"] >= 1
        assert samples["loyalty_apply_seconds_count"] == samples["loyalty_batch_size_count"]
        assert samples["loyalty_publish_to_apply_lag_seconds_count"] == 10
        # From the database at scrape time: 10 accounts and 10 EARNs wait for a relay.
        assert samples["loyalty_outbox_backlog"] == 20
        assert samples["loyalty_outbox_oldest_age_seconds"] > 0
    finally:
        worker.stop()


def test_a_relay_killed_during_a_webhook_request_sends_it_again_with_the_same_id(
        deploy: Any, receiver: Receiver) -> None:
    """The receiver SIGKILLs the relay while it waits for the answer to its first request:
    the delivery was made but never recorded, so the next relay makes it again."""
    env = deploy("redis", webhook_allow_private="1", relay_interval_ms="50")
    hook = env.cli_json("webhooks", "add", "--url", receiver.url, "--event", "account.created")
    ledger = Ledger(db.get_engine(env.db_url))
    ledger.apply_events([signup("w")])
    db.dispose_all()
    relay = Relay(env)
    receiver.on_request = lambda: relay.stop(signal.SIGKILL)
    wait_for(lambda: relay.proc.poll() is not None, 60, "the relay killed by the receiver")
    receiver.on_request = None
    assert [d["status"] for d in env.cli_json("webhooks", "deliveries")["items"]] == ["pending"]
    env.cli("relay", "--once")
    ids = [headers["webhook-id"] for headers, _ in receiver.accepted]
    assert len(ids) == 2 and ids[0] == ids[1] == outbox_ids(env)[0]
    secret = Webhook(hook["secret"])
    assert all(secret.verify(body, headers)["type"] == "account.created"
               for headers, body in receiver.accepted)
    assert [d["status"] for d in env.cli_json("webhooks", "deliveries")["items"]] == ["delivered"]
