"""Issue 8, end to end: what a new user met on a first day, with a real worker and CLI."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import LOYALTY, Env, wait_for
from tests.e2e.streams import TS, letters_by_message, shop, sql

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def _letters(env: Env) -> dict[str, dict[str, Any]]:
    items = env.cli_json("dlq", "list", "--limit", "1000")["items"]
    return {d["message_id"]: d for d in items}


def _order(contact: str, order_id: str, total: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": extra.pop("event_id", f"e-{uuid.uuid4().hex[:8]}"),
            "contact_id": contact, "order_id": order_id, "total": total,
            "currency": extra.pop("currency", "USD"), "occurred_at": TS, **extra}


# -- item 1 ----------------------------------------------------------------------------


def test_the_request_id_printed_on_a_timeout_is_the_one_to_repeat(deploy) -> None:  # type: ignore[no-untyped-def]
    env = deploy("redis")
    first = env.worker()
    shop(env).send_task("loyalty.events.signup", args=[
        {"event_id": "s-bob", "contact_id": "bob", "occurred_at": TS}], queue="loyalty.events")
    wait_for(lambda: env.cli("accounts", "get", "--contact-id", "bob", check=False)
             .returncode == 0, 30, "the signup")
    first.stop()
    args = ["adjust", "--contact-id", "bob", "--amount", "3", "--description", "while down",
            "--actor", "ops"]
    down = env.cli(*args, "--timeout", "1", check=False)
    assert down.returncode == 1, down.stderr
    found = re.search(r"request (\S+) is queued", down.stderr)
    assert found, down.stderr
    request_id = found.group(1)
    env.worker()
    again = env.cli(*args, "--request-id", request_id, "--timeout", "30")
    assert again.stdout.startswith("applied"), again.stdout
    entries = env.cli_json("transactions", "list", "--contact-id", "bob", "--type", "ADJUST")
    assert [e["idempotency_key"] for e in entries["items"]] == [f"adjust:{request_id}"]
    assert env.cli_json("accounts", "get", "--contact-id", "bob")["points"]["balance"] == 103


def test_the_publisher_returns_the_request_id_to_repeat(deploy) -> None:  # type: ignore[no-untyped-def]
    from loyalty.publish import Publisher

    env = deploy("redis")
    with Publisher(env.broker_url, env.result_backend) as publisher:
        result = publisher.adjust_points(contact_id="x", amount=1, description="d", actor="a")
        chosen = publisher.adjust_points(request_id="r-1", contact_id="x", amount=1,
                                         description="d", actor="a")
    assert result.request_id != result.id and len(result.request_id) == 36
    assert chosen.request_id == "r-1"


# -- item 3 ----------------------------------------------------------------------------


def test_the_readme_publisher_example_works(deploy) -> None:  # type: ignore[no-untyped-def]
    env = deploy("redis")
    env.worker()
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    [example] = [b for b in blocks if "publisher.adjust_points" in b]
    example = example.replace('"redis://127.0.0.1:6379/0"', repr(env.broker_url)) \
        .replace('"redis://127.0.0.1:6379/1"', repr(env.result_backend))
    printed: list[Any] = []
    for run in range(3):
        code = example.replace('"bob"', repr(f"bob-{run}")).replace('"order-7"', f'"order-7-{run}"')
        exec(compile(code, "README example", "exec"), {"print": printed.append})  # noqa: S102
    assert [p["status"] for p in printed] == ["applied"] * 3, printed


# -- items 2, 8, 13: what the worker dead-letters, and the detail it gives ----------------


def test_dead_letters_say_what_is_wrong(deploy) -> None:  # type: ignore[no-untyped-def]
    env = deploy("redis", not_found_retries=0)
    env.worker()
    app = shop(env)
    app.send_task("loyalty.events.signup", args=[
        {"event_id": "s-1", "contact_id": "alice", "occurred_at": TS}], queue="loyalty.events")
    wait_for(lambda: env.cli("accounts", "get", "--contact-id", "alice", check=False)
             .returncode == 0, 30, "the signup")
    sent = {
        "huge": app.send_task("loyalty.events.order_completed",
                              args=[_order("alice", "o-huge", "99999999999999")],
                              queue="loyalty.events").id,
        "nowhere": app.send_task("loyalty.events.nonexistent", args=[{}],
                                 queue="loyalty.events").id,
        "refund": app.send_task("loyalty.events.bulk", args=[{"events": [
            {"type": "refund", "payload": {}}]}], queue="loyalty.events").id + "#0",
        "future": app.send_task("loyalty.events.order_completed", args=[
            _order("alice", "o-future", "1.00", occurred_at="2099-01-01T00:00:00Z")],
            queue="loyalty.events").id,
        "email": app.send_task("loyalty.events.signup", args=[
            {"event_id": "s-2", "contact_id": "eve", "email": "not an email",
             "occurred_at": TS}], queue="loyalty.events").id,
    }
    letters = wait_for(lambda: (found := _letters(env)) and set(sent.values()) <= set(found)
                       and found, 60, "the dead letters")
    huge = letters[sent["huge"]]
    assert huge["reason"] == "points_above_maximum", huge
    assert letters[sent["nowhere"]]["reason"] == "unknown_task"
    assert letters[sent["nowhere"]]["error_detail"].startswith(
        "no task named 'loyalty.events.nonexistent'"), letters[sent["nowhere"]]
    assert "KeyError" not in letters[sent["nowhere"]]["error_detail"]
    refund = letters[sent["refund"]]
    assert refund["reason"] == "invalid_payload"
    assert refund["error_detail"] == ("type: unknown event type 'refund'; known: activity,"
                                      " order.completed, order.refunded, signup"), refund
    assert letters[sent["future"]]["reason"] == "invalid_payload"
    assert "in the future" in letters[sent["future"]]["error_detail"]
    assert letters[sent["email"]]["error_detail"].startswith("email: must be an email address")
    assert "^" not in letters[sent["email"]]["error_detail"]
    assert env.cli_json("accounts", "get", "--contact-id", "alice")["points"]["balance"] == 100
    assert env.cli_json("verify")["ok"]

    # items 6, 7, 8: a replay keeps the reason, says what happened, and bad reasons are usage
    # (a letter kept unread, as this unknown task's, is skipped: issue 7)
    done = env.cli("dlq", "replay", "--id", str(letters[sent["nowhere"]]["id"]), check=False)
    assert done.returncode == 0
    line = done.stdout.splitlines()[0]
    assert line.endswith("skipped  loyalty.events.nonexistent  letters kept as unknown_task are"
                         " never replayed; discard them"), line
    assert [d["id"] for d in env.cli_json("dlq", "list", "--reason", "unknown_task")["items"]] \
        == [letters[sent["nowhere"]]["id"]]
    skipped = env.cli("dlq", "replay", "--id", str(letters[sent["nowhere"]]["id"]), "--id",
                      str(letters[sent["huge"]]["id"]), check=False)
    assert not any(line.rstrip().endswith(":") for line in skipped.stdout.splitlines()), \
        skipped.stdout
    bogus = env.cli("dlq", "list", "--reason", "bogus", check=False)
    assert bogus.returncode == 2 and "unknown reason code 'bogus'" in bogus.stderr
    assert env.cli("dlq", "replay", "--reason", "bogus", check=False).returncode == 2


# -- item 4 ----------------------------------------------------------------------------


def test_a_resent_order_with_another_total_is_findable(deploy) -> None:  # type: ignore[no-untyped-def]
    env = deploy("redis")
    worker = env.worker()
    env.cli("publish", "signup", "--contact-id", "alice")
    env.cli("publish", "order", "--contact-id", "alice", "--order-id", "order-1001",
            "--total", "49.90", "--currency", "USD")
    wait_for(lambda: len(env.cli_json("events", "list", "--contact-id", "alice")["items"]) == 2,
             30, "the first order")
    env.cli("publish", "order", "--contact-id", "alice", "--order-id", "order-1001",
            "--total", "99.90", "--currency", "USD")
    changed = wait_for(lambda: env.cli_json("events", "list", "--outcome",
                                            "duplicate_order_changed")["items"], 30, "the re-send")
    assert changed[0]["detail"]["earned_total"] == "49.9"
    assert changed[0]["detail"]["total"] == "99.9"
    assert changed[0]["payload"]["order_id"] == "order-1001"
    table = env.cli("events", "list", "--contact-id", "alice").stdout
    assert "duplicate_order_changed" in table and "earned" in table
    assert any(r.get("msg") == "order re-sent with another total" and r.get("level") == "warning"
               for r in worker.logs())
    assert env.cli("events", "list", check=False).returncode == 2


# -- items 9, 10, 11: logs say what happened, in both formats --------------------------


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_logs_say_what_happened(deploy, log_format: str) -> None:  # type: ignore[no-untyped-def]
    env = deploy("redis", batch_wait_ms=200)
    env.vars["LOYALTY_LOG_FORMAT"] = log_format
    worker = env.worker()
    app = shop(env)
    signup = {"event_id": "s-dup", "contact_id": "carol", "occurred_at": TS}
    for _ in range(3):
        app.send_task("loyalty.events.signup", args=[signup], queue="loyalty.events")
    app.send_task("loyalty.events.order_completed", args=[
        {"event_id": "bad", "contact_id": "carol", "order_id": "o", "total": "-1",
         "currency": "USD", "occurred_at": TS}], queue="loyalty.events")
    wait_for(lambda: sql(env, "SELECT count(*) FROM dead_letters")[0][0] == 1, 30, "the letter")
    result = env.cli_json("adjust", "--contact-id", "carol", "--amount", "5", "--description",
                          "d", "--actor", "ops")
    assert result["status"] == "applied"
    wait_for(lambda: "adjustment applied" in worker.log.read_text(), 30, "the adjustment line")
    text = worker.log.read_text()
    assert "succeeded in" not in text
    if log_format == "text":
        batch_lines = [line for line in text.splitlines() if "batch applied" in line]
        counts = {key: sum(int(re.search(rf" {key}=(\d+)", line).group(1))  # type: ignore[union-attr]
                           for line in batch_lines) for key in ("applied", "duplicates",
                                                                 "dead_lettered")}
        assert counts == {"applied": 1, "duplicates": 2, "dead_lettered": 1}, batch_lines
        [dead] = [line for line in text.splitlines() if "dead-lettered" in line]
        assert "reason=invalid_payload" in dead and "event_id=bad" in dead \
            and "contact_id=carol" in dead, dead
        [adjusted] = [line for line in text.splitlines() if "adjustment applied" in line]
        assert "balance=105" in adjusted and "contact_id=carol" in adjusted, adjusted
        return
    records = worker.logs()
    batches = [r for r in records if r.get("msg") == "batch applied"]
    assert sum(r["applied"] for r in batches) == 1, batches
    assert sum(r["duplicates"] for r in batches) == 2, batches
    [dead] = [r for r in records if r.get("msg") == "dead-lettered"]
    assert (dead["reason"], dead["event_id"], dead["contact_id"]) == ("invalid_payload", "bad",
                                                                      "carol")
    about = [r for r in records if r.get("task_id") and r.get("task") ==
             "loyalty.accounts.adjust_points"]
    assert [r["msg"] for r in about] == ["adjustment applied"], about
    assert about[0]["balance"] == 105 and "account" not in about[0]
    for record in records:
        for value in record.values():
            assert not (isinstance(value, str) and re.match(r"^[{\[]'", value)), record


# -- items 12, 13, 14: the command line -------------------------------------------------


def test_command_line_output_and_exit_codes(deploy) -> None:  # type: ignore[no-untyped-def]
    env = deploy("redis")
    alone = subprocess.run([LOYALTY], env=env.vars, capture_output=True, text=True, timeout=60)
    assert (alone.returncode, alone.stderr) == (0, ""), alone.stderr
    assert alone.stdout.startswith("Usage: loyalty")
    group = env.cli("dlq")
    assert group.stdout.startswith("Usage: loyalty dlq")
    zero = env.cli("rules", "create", "--name", "x", "--trigger", "order.completed", "--kind",
                   "fixed", "--points", "0", "--currency", "EUR", check=False)
    assert zero.returncode == 2, zero.stderr
    assert "points must be between 1 and" in zero.stderr
    assert "up_to_date: true" in env.cli("db", "current").stdout

    env.worker()
    # Contracts refuse control characters in ids (issue 7) ...
    refused = shop(env).send_task("loyalty.events.signup", args=[
        {"event_id": "s-tab", "contact_id": "tab\there", "occurred_at": TS}],
        queue="loyalty.events").id
    shop(env).send_task("loyalty.events.signup", args=[
        {"event_id": "s-plain", "contact_id": "plain", "occurred_at": TS}],
        queue="loyalty.events")
    wait_for(lambda: refused in letters_by_message(env), 30, "the refused signup")
    assert letters_by_message(env)[refused] == "invalid_payload"
    # ... but the table must not break on any stored value, whoever stored it.
    stored = "tab\there\nnew\x1b[31mred"
    sql(env, "WITH c AS (INSERT INTO contacts (contact_id, profile_at) VALUES (%s, now())"
             " RETURNING contact_id) INSERT INTO accounts (contact_id) SELECT contact_id FROM c"
             " RETURNING id", stored)
    wait_for(lambda: len(env.cli_json("accounts", "list")["items"]) == 2, 30, "two accounts")
    table = env.cli("accounts", "list").stdout.splitlines()
    assert len(table) == 3, table  # header and one line per account
    assert "\t" not in "".join(table) and "\x1b" not in "".join(table)
    assert any("tab\\there\\nnew\\x1b[31mred" in line for line in table), table
    # id, contact_id, balance, earned, adjusted, reversed (0009), revision
    columns = [re.split(r" {2,}", line.strip()) for line in table]
    assert {len(c) for c in columns} == {7}, columns  # `reversed` is a column too
    assert json.loads(env.cli("accounts", "list", "--json").stdout)["items"]
