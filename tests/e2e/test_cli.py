"""The `loyalty` program as a subprocess, the way operators and scripts run it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from loyalty import db
from tests.conftest import drop_database, fresh_database, owner_url, superuser_url
from tests.e2e.conftest import Env
from tests.e2e.streams import sql

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shared_env(template_db: str, redis_index: int, tmp_path_factory) -> Iterator[Env]:  # type: ignore[no-untyped-def]
    """One database for the tests that only read or are refused: they change nothing."""
    url = fresh_database(template_db)
    yield Env(url, f"redis://127.0.0.1:6379/{redis_index}",
              f"redis://127.0.0.1:6379/{redis_index}", tmp_path_factory.mktemp("cli"))
    drop_database(url)


@pytest.fixture
def env(template_db: str, redis_index: int, tmp_path) -> Iterator[Env]:  # type: ignore[no-untyped-def]
    url = fresh_database(template_db)
    yield Env(url, f"redis://127.0.0.1:6379/{redis_index}",
              f"redis://127.0.0.1:6379/{redis_index}", tmp_path)
    drop_database(url)


def test_rules_lifecycle(env: Env) -> None:
    rules = env.cli_json("rules", "list")
    assert [(r["trigger"], r["kind"], r["points"], r["money_amount"], r["status"])
            for r in rules["items"]] == [("signup", "fixed", 100, None, "ACTIVE"),
                                         ("order.completed", "conversion", 1, "1", "ACTIVE")]
    assert rules["next_cursor"] is None
    created = env.cli_json("rules", "create", "--name", "EUR double", "--trigger",
                           "order.completed", "--kind", "conversion", "--points", "2",
                           "--per", "1.00", "--currency", "EUR")
    assert (created["currency"], created["revision"]) == ("EUR", 1)
    updated = env.cli_json("rules", "update", str(created["id"]), "--points", "3",
                           "--revision", "1")
    assert (updated["points"], updated["revision"]) == (3, 2)
    paused = env.cli_json("rules", "pause", str(created["id"]))
    assert (paused["status"], paused["revision"]) == ("PAUSED", 3)
    assert env.cli_json("rules", "resume", str(created["id"]))["status"] == "ACTIVE"


@pytest.mark.parametrize(("args", "code", "message"), [
    (["rules", "create", "--name", "x", "--trigger", "order.completed", "--kind", "conversion",
      "--points", "1", "--per", "1"], 1, "another ACTIVE rule"),
    (["rules", "create", "--name", "x", "--trigger", "signup", "--kind", "conversion",
      "--points", "1", "--per", "1", "--paused"], 2, "signup rule"),
    (["rules", "update", "99", "--points", "2"], 1, "no earn rule with id 99"),
    (["rules", "update", "1", "--points", "2", "--revision", "5"], 1, "revision"),
    (["rules", "update", "2", "--per", "abc"], 2, "not a decimal"),
    (["accounts", "get", "--contact-id", "nobody"], 1, "no such loyalty account"),
    (["accounts", "get", "--account-id", "not-a-uuid"], 2, "not a UUID"),
    (["accounts", "list", "--cursor", "bm90LWEtdXVpZA"], 2, "invalid cursor"),
    (["rules", "create", "--name", "x", "--trigger", "signup", "--kind", "fixed",
      "--points", "10000000", "--paused"], 2, "at most 9999999"),
    (["accounts", "list", "--cursor", "%%%"], 2, "invalid cursor"),
    (["adjust", "--contact-id", "x", "--amount", "0", "--description", "d", "--actor", "a"], 2,
     "payload: amount must not be 0"),
    (["publish", "order", "--contact-id", "c", "--order-id", "o", "--total", "-3",
      "--currency", "USD"], 2, "total"),
    (["publish", "order", "--contact-id", "c", "--order-id", "o", "--total", "3",
      "--currency", "usd"], 2, "currency"),
])
def test_bad_input_is_one_line_and_non_zero(shared_env: Env, args: list[str], code: int,
                                            message: str) -> None:
    done = shared_env.cli(*args, check=False)
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_setting_and_unreachable_database_are_one_line(env: Env) -> None:
    env.vars["LOYALTY_DATABSE_URL"] = "typo"
    done = env.cli("totals", check=False)
    assert (done.returncode, done.stderr.count("\n")) == (1, 1)
    assert "unknown setting LOYALTY_DATABSE_URL" in done.stderr
    del env.vars["LOYALTY_DATABSE_URL"]
    env.vars["LOYALTY_DATABASE_URL"] = "postgresql+psycopg://postgres:secretpw@127.0.0.1:1/x"
    done = env.cli("totals", check=False)
    assert done.returncode == 1 and done.stderr.startswith("error:")
    assert "secretpw" not in done.stderr + done.stdout


def test_every_read_prints_one_json_document(env: Env) -> None:
    for args in (["rules", "list"], ["accounts", "list"], ["totals"], ["verify"], ["dlq", "list"],
                 ["db", "current"], ["rewards", "list"]):
        done = env.cli(*args, "--json")
        json.loads(done.stdout)  # exactly one document, nothing else on stdout
    assert env.cli_json("totals") == {"points": {"balance": 0, "earned": 0, "adjusted": 0,
                                                 "redeemed": 0, "expired": 0, "reversed": 0}, "accounts": 0,
                                      "tiers": []}
    assert env.cli_json("db", "current")["up_to_date"] is True


def test_worker_refuses_an_unmigrated_database(env: Env, template_db: str) -> None:
    empty = env.db_url.rsplit("/", 1)[0] + "/postgres"
    env.vars["LOYALTY_DATABASE_URL"] = empty
    done = env.cli("worker", check=False, timeout=60)
    assert done.returncode == 3
    assert "run `loyalty db upgrade` first" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_celery_command_also_refuses_an_unmigrated_database(env: Env) -> None:
    import subprocess

    from tests.e2e.conftest import BIN

    env.vars["LOYALTY_DATABASE_URL"] = env.db_url.rsplit("/", 1)[0] + "/postgres"
    done = subprocess.run([str(BIN / "celery"), "-A", "worker", "worker"], env=env.vars,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "run `loyalty db upgrade` first" in done.stderr


def test_db_create_roles_then_upgrade_as_a_new_user_would(env: Env, template_db: str) -> None:
    """`make worker`'s steps on a database that does not exist: the superuser creates the
    roles and the database, the owner migrates and grants, the application role works."""
    target = env.db_url + "_new"
    env.vars["LOYALTY_DATABASE_URL"] = target
    env.vars["LOYALTY_OWNER_DATABASE_URL"] = owner_url(target)
    env.vars["LOYALTY_BOOTSTRAP_DATABASE_URL"] = superuser_url(env.db_url.rsplit("/", 1)[0]
                                                               + "/postgres")
    try:
        done = env.cli("db", "create-roles")
        assert f"created database {target.rsplit('/', 1)[1]}" in done.stdout
        assert "role loyalty_test_app" in done.stdout
        done = env.cli("db", "upgrade", "--create-database")
        assert "created database" not in done.stdout
        assert f"at revision {db.head_revision()}" in done.stdout
        assert "granted the application role loyalty_test_app" in done.stdout
        again = env.cli("db", "create-roles")  # safe to run again
        assert "created" not in again.stdout
        assert env.cli_json("rules", "list")["items"]
        assert env.cli_json("verify")["ok"] is True
    finally:
        drop_database(target)


def test_db_create_roles_refuses_to_demote_a_superuser(env: Env) -> None:
    """Naming the superuser as the owner must not strip it of its rights."""
    env.vars["LOYALTY_OWNER_DATABASE_URL"] = env.vars["LOYALTY_BOOTSTRAP_DATABASE_URL"]
    done = env.cli("db", "create-roles", check=False)
    assert done.returncode == 1
    assert "is a superuser; give the owner and the application roles of their own" in done.stderr
    still = sql(env, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    assert still == [(False,)]  # the test's own connection is the application role
    admin = env.vars["LOYALTY_BOOTSTRAP_DATABASE_URL"].split("//", 1)[1].split("@", 1)[0]
    assert sql(env, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", admin) == [(True,)]
