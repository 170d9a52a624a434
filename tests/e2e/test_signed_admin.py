"""LOYALTY_REQUIRE_SIGNED_ADMIN: shops publish plain JSON events, staff actions must be signed.

An unsigned admin task, on either queue, and anything unsigned taken from `loyalty.admin`
is dead-lettered as `content_disallowed` and never applied; a forged signature is
`signature_invalid`; signed admin tasks and plain events apply.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest
import redis

from tests.e2e.conftest import Env, wait_for
from tests.e2e.streams import TS, balances, letters_by_message, shop, sql
from tests.e2e.test_failures import FAST
from tests.e2e.test_signing import make_identity, signed

pytestmark = pytest.mark.e2e


def grant(request_id: str) -> dict[str, object]:
    return {"request_id": request_id, "contact_id": "adm-1", "balance": 999_999_999,
            "description": "free points", "actor": "shop"}


def push_to_list(env: Env, queue: str, task: str, payload: dict, claims: str) -> str:
    """LPUSH a kombu message straight onto a Redis list, its delivery_info naming `claims`."""
    message_id = str(uuid.uuid4())
    body = base64.b64encode(json.dumps([[payload], {}, {}]).encode()).decode()
    message = {"body": body, "content-encoding": "utf-8", "content-type": "application/json",
               "headers": {"lang": "py", "task": task, "id": message_id, "root_id": message_id},
               "properties": {"correlation_id": message_id, "delivery_mode": 2,
                              "delivery_info": {"exchange": claims, "routing_key": claims},
                              "priority": 0, "body_encoding": "base64",
                              "delivery_tag": str(uuid.uuid4())}}
    client = redis.Redis.from_url(env.broker_url)
    try:
        client.lpush(queue, json.dumps(message))
    finally:
        client.close()
    return message_id


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_admin_tasks_must_be_signed(deploy, tmp_path: Path, broker: str) -> None:
    env: Env = deploy(broker, **FAST)
    store = tmp_path / "trusted"
    key, cert = make_identity(tmp_path / "ops", "ops")
    store.mkdir()
    (store / "ops.pem").write_bytes(cert.read_bytes())
    staff_vars = signed(env, key, cert, store)
    env.vars = {**staff_vars, "LOYALTY_REQUIRE_SIGNED_ADMIN": "true"}
    env.worker()
    plain = shop(env)

    # A shop's plain JSON event applies.
    plain.send_task("loyalty.events.signup", args=[{
        "event_id": "adm-su", "contact_id": "adm-1", "occurred_at": TS}], queue="loyalty.events")
    wait_for(lambda: balances(env).get("adm-1") == 100, 30, "the plain signup")
    # A signed adjustment applies (`loyalty adjust` signs with the LOYALTY_SECURITY_* files).
    adjusted = env.cli_json("adjust", "--contact-id", "adm-1", "--amount", "5",
                            "--description", "signed", "--actor", "ops")
    assert adjusted["status"] == "applied"

    refused = {
        plain.send_task("loyalty.accounts.adjust_points", args=[grant("on-admin")],
                        queue="loyalty.admin").id: "content_disallowed",
        plain.send_task("loyalty.accounts.adjust_points", args=[grant("on-events")],
                        queue="loyalty.events").id: "content_disallowed",
        plain.send_task("loyalty.deadletters.replay", args=[{"all": True}],
                        queue="loyalty.events").id: "content_disallowed",
        plain.send_task("loyalty.events.signup", args=[{
            "event_id": "adm-su-2", "contact_id": "adm-2", "occurred_at": TS}],
            queue="loyalty.admin").id: "content_disallowed",
    }
    forger_key, forger_cert = make_identity(tmp_path / "forger", "forger")
    forger = Env(env.db_url, env.broker_url, env.result_backend, tmp_path)
    forger.vars = {**signed(forger, forger_key, forger_cert, store),
                   "LOYALTY_REQUIRE_SIGNED_ADMIN": "true"}
    forged = json.loads(forger.cli("publish", "signup", "--contact-id", "forged-1",
                                   "--json").stdout)["message_id"]
    refused[forged] = "signature_invalid"
    if broker == "redis":
        # On Redis a message's exchange and routing key are whatever its producer wrote:
        # this event sits on the admin list while claiming to be for loyalty.events.
        refused[push_to_list(env, "loyalty.admin", "loyalty.events.signup", {
            "event_id": "adm-su-3", "contact_id": "adm-3", "occurred_at": TS},
            claims="loyalty.events")] = "content_disallowed"

    wait_for(lambda: set(refused) <= set(letters_by_message(env)), 30, "the dead letters")
    letters = letters_by_message(env)
    assert {m: letters[m] for m in refused} == refused
    assert balances(env) == {"adm-1": 105}
    assert sql(env, "SELECT type, amount FROM ledger_entries ORDER BY seq") == [
        ("EARN", 100), ("ADJUST", 5)]
    assert env.broker.pending() == 0
