"""Staff requests end to end: the `loyalty` command publishes to `loyalty.admin`, a real
worker applies the request, and the command prints the worker's answer.

Runs on both brokers (the `broker_env` fixture), as tests/e2e/test_worker.py does.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from loyalty.publish import Publisher
from tests.e2e.conftest import Env, Worker, wait_for
from tests.e2e.streams import sql

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _run(env: Env, *args: str) -> tuple[int, dict[str, Any]]:
    done = env.cli(*args, "--json", check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}


def test_the_lifecycle_through_the_cli(broker_env: Env, running_worker: Worker) -> None:
    contact = f"life-{uuid.uuid4().hex[:6]}"
    code, created = _run(broker_env, "accounts", "create", "--contact-id", contact,
                         "--email", f"{contact}@example.com", "--request-id", f"c-{contact}")
    assert (code, created["status"]) == (0, "created")
    code, again = _run(broker_env, "accounts", "create", "--contact-id", contact)
    assert (code, again["status"], again["account"]["id"]) == (0, "existing",
                                                               created["account"]["id"])
    code, earned = _run(broker_env, "earn", "--contact-id", contact, "--amount", "120",
                        "--activity", "product review", "--actor", "support@shop")
    assert (code, earned["status"], earned["account"]["points"]["earned"]) == (0, "applied", 120)

    reward = broker_env.cli_json("rewards", "create", "--name", "5 USD off", "--kind",
                                 "discount_amount", "--value", "5.00", "--currency", "USD",
                                 "--cost-in-points", "50")
    assert {k: reward[k] for k in ("name", "kind", "value", "currency", "cost_in_points",
                                   "status", "revision")} == {
        "name": "5 USD off", "kind": "discount_amount", "value": "5", "currency": "USD",
        "cost_in_points": 50, "status": "ACTIVE", "revision": 1}
    assert set(reward) == {"id", "name", "kind", "value", "currency", "cost_in_points",
                           "tier_costs", "status", "revision"}
    code, spent = _run(broker_env, "redeem", "--contact-id", contact, "--reward-id",
                       str(reward["id"]), "--count", "2", "--reference-id", "cart-1",
                       "--actor", "support@shop", "--request-id", f"r-{contact}")
    assert (code, spent["status"], spent["account"]["points"]["balance"]) == (0, "applied", 20)
    code, repeated = _run(broker_env, "redeem", "--contact-id", contact, "--reward-id",
                          str(reward["id"]), "--count", "2", "--reference-id", "cart-1",
                          "--actor", "support@shop", "--request-id", f"r-{contact}")
    assert (code, repeated) == (0, spent)  # the first result, nothing applied twice
    code, poor = _run(broker_env, "redeem", "--contact-id", contact, "--reward-id",
                      str(reward["id"]), "--actor", "support@shop")
    assert (code, poor["status"], poor["reason"]) == (1, "rejected", "insufficient_balance")
    text = broker_env.cli("redeem", "--contact-id", contact, "--amount", "5", "--actor", "ops")
    assert text.stdout.startswith("applied: transaction ") and ", code " in text.stdout

    redemption = broker_env.cli_json("redemptions", "get", "--code",
                                     spent["redemption"]["code"])
    assert redemption == spent["redemption"]
    listed = broker_env.cli_json("redemptions", "list", "--contact-id", contact)
    assert [r["points"] for r in listed["items"]] == [5, 100]
    code, back = _run(broker_env, "refund-transaction", "--transaction-id",
                      spent["transaction_id"], "--actor", "support@shop")
    assert (code, back["status"], back["redemption"]["status"]) == (0, "applied", "REFUNDED")
    code, twice = _run(broker_env, "refund-transaction", "--transaction-id",
                       spent["transaction_id"], "--actor", "support@shop")
    assert (code, twice["reason"]) == (1, "already_refunded")

    account = broker_env.cli_json("accounts", "get", "--contact-id", contact)
    assert account["points"] == {"balance": 115, "earned": 120, "adjusted": 0, "redeemed": 5,
                                 "expired": 0, "reversed": 0, "pending": 0}
    refunds = broker_env.cli_json("transactions", "list", "--contact-id", contact, "--type",
                                  "REFUND")["items"]
    assert [(e["amount"], e["source"]["refunds_transaction_id"]) for e in refunds] == [
        (100, spent["transaction_id"])]
    assert len(broker_env.cli_json("transactions", "list", "--contact-id", contact, "--type",
                                   "REDEEM")["items"]) == 2
    assert broker_env.cli_json("verify")["ok"] is True


def test_staff_rejections_through_the_worker(broker_env: Env, running_worker: Worker) -> None:
    """Rejections are answers, not dead letters; a conflict or an invalid payload is
    dead-lettered and answered in the same shape."""
    contact = f"rej-{uuid.uuid4().hex[:6]}"
    with Publisher(broker_env.broker_url, broker_env.result_backend) as publisher:
        missing = publisher.earn_points(contact_id=contact, amount=5, activity="x",
                                        actor="ops").get(timeout=60)
        assert (missing["status"], missing["reason"]) == ("rejected", "account_not_found")
        assert publisher.create_account(contact_id=contact).get(timeout=60)["status"] \
            == "created"
        refund = publisher.refund_transaction(transaction_id=str(uuid.uuid4()),
                                              actor="ops").get(timeout=60)
        assert refund["reason"] == "transaction_not_found"
        paused = broker_env.cli_json("rewards", "create", "--name", "Mug", "--kind", "custom",
                                     "--cost-in-points", "1", "--paused")
        result = publisher.redeem_points(contact_id=contact, reward_id=paused["id"],
                                         actor="ops").get(timeout=60)
        assert result["reason"] == "reward_paused"
        first = publisher.earn_points(request_id=f"same-{contact}", contact_id=contact,
                                      amount=5, activity="x", actor="ops").get(timeout=60)
        assert first["status"] == "applied"
        other = publisher.earn_points(request_id=f"same-{contact}", contact_id=contact,
                                      amount=6, activity="x", actor="ops").get(timeout=60)
        assert (other["status"], other["reason"]) == ("rejected", "idempotency_conflict")
        # A payload only a raw producer could send: the contract refuses it.
        raw = publisher.app.send_task("loyalty.accounts.redeem_points", args=[{
            "request_id": f"bad-{contact}", "contact_id": contact, "reward_id": paused["id"],
            "amount": 5, "actor": "ops"}], queue="loyalty.admin").get(timeout=60)
        assert (raw["status"], raw["reason"]) == ("rejected", "invalid_payload")
        # A redemption sent where shops publish is never run.
        publisher.app.send_task("loyalty.accounts.redeem_points", args=[{
            "request_id": f"sneak-{contact}", "contact_id": contact, "amount": 5,
            "actor": "shop"}], queue="loyalty.events")
        wait_for(lambda: sql(broker_env, "SELECT 1 FROM dead_letters WHERE reason ="
                                         " 'wrong_queue' AND payload LIKE %s",
                             f"%sneak-{contact}%"), 60, "the wrong_queue letter")
    assert broker_env.cli_json("accounts", "get", "--contact-id", contact)["points"]["balance"] \
        == 5
    letters = {r[0] for r in sql(broker_env, "SELECT reason FROM dead_letters WHERE payload"
                                             " LIKE %s", f"%{contact}%")}
    assert letters == {"idempotency_conflict", "invalid_payload", "wrong_queue"}


def test_rewards_cli_revisions_and_bad_input(broker_env: Env) -> None:
    made = broker_env.cli_json("rewards", "create", "--name", "Ten percent", "--kind",
                               "discount_percent", "--value", "10", "--cost-in-points", "300")
    rid = str(made["id"])
    assert broker_env.cli_json("rewards", "update", rid, "--cost-in-points", "250",
                               "--revision", "1")["revision"] == 2
    stale = broker_env.cli("rewards", "update", rid, "--cost-in-points", "200", "--revision", "1",
                           check=False)
    assert (stale.returncode, stale.stderr.count("\n")) == (1, 1)
    assert "at revision 2, not 1" in stale.stderr
    assert broker_env.cli_json("rewards", "pause", rid)["status"] == "PAUSED"
    assert broker_env.cli_json("rewards", "resume", rid, "--revision", "3")["status"] == "ACTIVE"
    assert any(r["id"] == made["id"] for r in broker_env.cli_json("rewards", "list")["items"])
    for args, code, message in (
            (["rewards", "create", "--name", "x", "--kind", "discount_percent", "--value",
              "150", "--cost-in-points", "1"], 2, "value from 1 to 100"),
            (["rewards", "create", "--name", "x", "--kind", "custom", "--cost-in-points", "0"],
             2, "cost in points"),
            (["rewards", "update", "999999", "--cost-in-points", "2"], 1, "no reward with id"),
            (["redemptions", "get", "--code", "AAAA-BBBB-CCCC-DDDD"], 1, "no such redemption"),
            (["redemptions", "get", "--id", "nope"], 2, "not a UUID"),
            (["redeem", "--contact-id", "x", "--amount", "5", "--count", "2", "--actor", "a"], 2,
             "count goes with reward_id"),
            (["earn", "--contact-id", "x", "--amount", "0", "--activity", "a", "--actor", "a"],
             2, "amount")):
        done = broker_env.cli(*args, check=False)
        assert done.returncode == code, (args, done.stderr)
        assert message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1



def test_the_readme_try_it_runs_as_written(deploy) -> None:  # type: ignore[no-untyped-def]
    """The README's shell session, verbatim, against a deployment of its own."""
    env = deploy("redis")
    env.worker()
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Try it", 1)[1]
    [script] = re.findall(r"```sh\n(.*?)```", section, re.S)[:1]
    done = subprocess.run(["bash", "-c", script], env=env.vars, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert "error" not in done.stderr.lower(), done.stderr
    assert done.returncode == 0, done.stderr
    assert re.search(r"applied: transaction \S+, code [2-9A-Z]{4}(-[2-9A-Z]{4}){3};", done.stdout)
    account = env.cli_json("accounts", "get", "--contact-id", "alice")
    # The order refund is the last event: the script's `sleep 1` may not have been enough.
    account = wait_for(lambda: (a := env.cli_json("accounts", "get", "--contact-id", "alice"))
                       ["points"]["reversed"] == 9 and a, 30, "the order refund")
    assert account["points"] == {"balance": 165, "earned": 149, "adjusted": 25, "redeemed": 0,
                                 "expired": 0, "reversed": 9, "pending": 0}
    types = [e["type"] for e in env.cli_json("transactions", "list", "--contact-id",
                                             "alice")["items"]]
    assert types == ["REVERSE", "REFUND", "REDEEM", "ADJUST", "EARN", "EARN"]
