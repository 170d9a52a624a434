"""`loyalty`: operate the ledger from a shell.

Reads take `--json` and then print exactly one JSON document. Every error is
one line on stderr and a non-zero exit: 1 for a refused or failed operation,
2 for bad usage, 3 for a database that is not ready.
"""

from __future__ import annotations

import json
import os
import sys
import unicodedata
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from loyalty import db
from loyalty.errors import (
    DEAD_LETTER_REASONS,
    InvalidPayload,
    InvalidRule,
    LoyaltyError,
    NotMigratedError,
    TransientError,
)
from loyalty.ledger import Ledger
from loyalty.settings import Settings, mask_url
from loyalty.views import InvalidCursor

JSON_HELP = "Print one JSON document instead of text."
#: A row id or revision: a bigint, so a larger number is bad input, not a database error.
ROW_ID = click.IntRange(1, 2**63 - 1)


class Context:
    def __init__(self) -> None:
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    def ledger(self) -> Ledger:
        engine = db.get_engine(self.settings.database_url, self.settings.db_pool_size)
        db.ensure_migrated(engine)
        return Ledger(engine)


pass_ctx = click.make_pass_decorator(Context, ensure=True)


def emit(data: Any, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text(data) if text else _text(data))


def printable(value: Any) -> str:
    """A stored value as text that cannot break a line or a table.

    Ids and descriptions are whatever producers sent: a tab, a newline, an escape
    sequence or an invisible format character is shown escaped (`\\t`, `\\x1b`,
    `\\u200b`), never written to the terminal. Booleans read as in JSON.
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    named = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
    if ch in named:
        return named[ch]
    if unicodedata.category(ch) == "Zs":
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
        else f"\\U{code:08x}"


def _text(data: Any, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(data, dict):
        lines = []
        for key, value in data.items():
            if isinstance(value, dict | list) and value:
                lines.append(f"{pad}{printable(key)}:")
                lines.append(_text(value, indent + 1))
            else:
                lines.append(f"{pad}{printable(key)}: {printable(value)}")
        return "\n".join(lines)
    if isinstance(data, list):
        return "\n".join(_text(item, indent) + ("\n" if isinstance(item, dict) else "")
                         for item in data).rstrip("\n")
    return f"{pad}{printable(data)}"


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, Callable[[dict], Any]]],
           next_cursor: str | None = None) -> str:
    cells = [[printable(get(row)) for _, get in columns] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _) in enumerate(columns)]
    lines = ["  ".join(h.ljust(w) for (h, _), w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    if not rows:
        lines.append("(none)")
    if next_cursor:
        lines.append(f"more: --cursor {next_cursor}")
    return "\n".join(lines)


def one_of(**options: Any) -> None:
    given = [name for name, value in options.items() if value is not None]
    if len(given) != 1:
        names = " | ".join("--" + n.replace("_", "-") for n in options)
        raise click.UsageError(f"give exactly one of {names}")


@click.group()
@click.version_option(package_name="loyalty-ledger")
def cli() -> None:
    """Loyalty-points ledger: events in, exact idempotent ledger out."""


# -- db ----------------------------------------------------------------------


@cli.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.option("--create-database", is_flag=True,
              help="Create the database first if it does not exist.")
@pass_ctx
def db_upgrade(ctx: Context, revision: str, create_database: bool) -> None:
    """Apply the Alembic migrations as the owner (LOYALTY_OWNER_DATABASE_URL), then grant
    the application role (the user of LOYALTY_DATABASE_URL) what it needs."""
    owner_url = ctx.settings.owner_database_url
    engine = db.get_engine(owner_url)
    try:
        if create_database and db.create_database_if_missing(owner_url):
            click.echo(f"created database {mask_url(owner_url)}")
        granted = db.upgrade(engine, revision, app_url=ctx.settings.database_url)
    except Exception as exc:
        raise _database_error(exc) from None
    click.echo(f"database {mask_url(owner_url)} at revision {db.current_revision(engine)}")
    if granted:
        click.echo(f"granted the application role {granted} its rights")


@db_group.command("create-roles")
@pass_ctx
def db_create_roles(ctx: Context) -> None:
    """Create the owner and application roles and the database, as a superuser
    (LOYALTY_BOOTSTRAP_DATABASE_URL). Safe to run again: it updates what exists."""
    from loyalty.roles import create_roles

    s = ctx.settings
    try:
        done = create_roles(s.bootstrap_database_url, s.owner_database_url, s.database_url)
    except Exception as exc:
        raise _database_error(exc) from None
    for line in done:
        click.echo(line)


@db_group.command("current")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def db_current(ctx: Context, as_json: bool) -> None:
    """Show the database's schema revision and the one this code needs."""
    engine = db.get_engine(ctx.settings.database_url)
    try:
        current = db.current_revision(engine)
    except Exception as exc:
        raise _database_error(exc) from None
    head = db.head_revision()
    emit({"current": current, "head": head, "up_to_date": current == head}, as_json)


def _database_error(exc: Exception) -> LoyaltyError:
    if isinstance(exc, LoyaltyError):
        return exc
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return TransientError(f"database error: {message}")


# -- worker ------------------------------------------------------------------


@cli.command("worker", context_settings={"ignore_unknown_options": True,
                                         "allow_extra_args": True})
@click.pass_context
def worker_command(click_ctx: click.Context) -> None:
    """Start the worker, as `celery -A worker worker` does. Extra options go to Celery."""
    ctx = click_ctx.ensure_object(Context)
    engine = db.get_engine(ctx.settings.database_url)
    try:
        db.ensure_migrated(engine)
    except NotMigratedError:
        raise
    except Exception as exc:
        raise _database_error(exc) from None
    finally:
        db.dispose_all()
    from worker.app import app

    argv = ["worker", "--loglevel", ctx.settings.log_level,
            "--queues", "loyalty.events,loyalty.admin", *click_ctx.args]
    app.worker_main(argv=argv)


# -- publish -----------------------------------------------------------------


@cli.group("publish")
def publish_group() -> None:
    """Publish events to the broker, as a shop's producer would."""


def _publisher(ctx: Context) -> Any:
    from loyalty.publish import Publisher

    return Publisher(settings=ctx.settings)


@publish_group.command("signup")
@click.option("--contact-id", required=True)
@click.option("--event-id", help="Defaults to a new UUID.")
@click.option("--member-id")
@click.option("--email")
@click.option("--name")
@click.option("--occurred-at", help="RFC 3339 timestamp; defaults to now.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def publish_signup(ctx: Context, as_json: bool, **fields: Any) -> None:
    """Publish loyalty.events.signup."""
    with _publisher(ctx) as publisher:
        sent = publisher.signup(**fields)
    emit(sent, as_json, lambda s: f"published {s['task']} event_id={s['payload']['event_id']}")


@publish_group.command("order")
@click.option("--contact-id", required=True)
@click.option("--order-id", required=True)
@click.option("--total", required=True, help='Decimal string, e.g. "49.90".')
@click.option("--currency", required=True, help="ISO 4217 code, e.g. USD.")
@click.option("--event-id", help="Defaults to a new UUID.")
@click.option("--occurred-at", help="RFC 3339 timestamp; defaults to now.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def publish_order(ctx: Context, as_json: bool, **fields: Any) -> None:
    """Publish loyalty.events.order_completed."""
    with _publisher(ctx) as publisher:
        sent = publisher.order_completed(**fields)
    emit(sent, as_json, lambda s: f"published {s['task']} event_id={s['payload']['event_id']}")


# -- accounts and transactions -------------------------------------------------


ACCOUNT_COLUMNS: list[tuple[str, Callable[[dict], Any]]] = [
    ("id", lambda a: a["id"]),
    ("contact_id", lambda a: a["contact_id"]),
    ("balance", lambda a: a["points"]["balance"]),
    ("earned", lambda a: a["points"]["earned"]),
    ("adjusted", lambda a: a["points"]["adjusted"]),
    ("revision", lambda a: a["revision"]),
]


@cli.group("accounts")
def accounts_group() -> None:
    """Loyalty accounts."""


@accounts_group.command("get")
@click.option("--account-id")
@click.option("--contact-id")
@click.option("--member-id")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def accounts_get(ctx: Context, account_id: str | None, contact_id: str | None,
                 member_id: str | None, as_json: bool) -> None:
    """Show one account."""
    one_of(account_id=account_id, contact_id=contact_id, member_id=member_id)
    account = ctx.ledger().get_account(account_id=account_id, contact_id=contact_id,
                                       member_id=member_id)
    emit(account, as_json)


@accounts_group.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def accounts_list(ctx: Context, limit: int, cursor: str | None, as_json: bool) -> None:
    """List accounts, a page at a time."""
    result = ctx.ledger().list_accounts(limit, cursor)
    emit(result, as_json, lambda r: _table(r["items"], ACCOUNT_COLUMNS, r["next_cursor"]))


@cli.group("transactions")
def transactions_group() -> None:
    """Ledger entries of an account."""


@transactions_group.command("list")
@click.option("--account-id")
@click.option("--contact-id")
@click.option("--type", "type_", type=click.Choice(["EARN", "ADJUST", "REDEEM", "REFUND",
                                                    "EXPIRE"]))
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def transactions_list(ctx: Context, account_id: str | None, contact_id: str | None,
                      type_: str | None, limit: int, cursor: str | None, as_json: bool) -> None:
    """List an account's ledger entries, newest first."""
    one_of(account_id=account_id, contact_id=contact_id)
    result = ctx.ledger().list_transactions(account_id=account_id, contact_id=contact_id,
                                            type_=type_, limit=limit, cursor=cursor)
    columns: list[tuple[str, Callable[[dict], Any]]] = [
        ("created_at", lambda e: e["created_at"]),
        ("type", lambda e: e["type"]),
        ("amount", lambda e: e["amount"]),
        ("balance_after", lambda e: e["balance_after"]),
        ("description", lambda e: e["description"]),
    ]
    emit(result, as_json, lambda r: _table(r["items"], columns, r["next_cursor"]))


# -- adjust ------------------------------------------------------------------


@cli.command("adjust")
@click.option("--account-id")
@click.option("--contact-id")
@click.option("--amount", type=int, help="Points to add (negative to remove).")
@click.option("--balance", type=int, help="Set the balance to this value.")
@click.option("--description", required=True)
@click.option("--actor", required=True, help="Who asked for the adjustment.")
@click.option("--revision", type=int, help="Reject unless the account is at this revision.")
@click.option("--request-id", help="Idempotency key; defaults to a new UUID.")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the worker's answer.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def adjust(ctx: Context, account_id: str | None, contact_id: str | None, amount: int | None,
           balance: int | None, description: str, actor: str, revision: int | None,
           request_id: str | None, timeout: float, as_json: bool) -> None:
    """Adjust an account's points through the worker; exit 1 if the request is rejected."""
    one_of(account_id=account_id, contact_id=contact_id)
    one_of(amount=amount, balance=balance)
    # Chosen here, so that the id printed on a timeout is the one to repeat.
    request_id = request_id or str(uuid.uuid4())
    with _publisher(ctx) as publisher:
        pending = publisher.adjust_points(
            request_id=request_id, account_id=account_id, contact_id=contact_id, amount=amount,
            balance=balance, description=description, actor=actor, revision=revision)
        try:
            result = pending.get(timeout=timeout, propagate=True)
        except Exception as exc:
            if type(exc).__name__ == "TimeoutError":
                raise TransientError(
                    f"no answer from a worker within {timeout:g}s (request {request_id} is queued"
                    " and will still be applied once; repeat with --request-id to read it)"
                ) from None
            raise
    emit(result, as_json, _adjust_text)
    if result.get("status") != "applied":
        sys.exit(1)


def _adjust_text(result: dict[str, Any]) -> str:
    account = result.get("account") or {}
    points = account.get("points", {})
    if result.get("status") == "applied":
        return (f"applied: transaction {result['transaction_id']}; balance {points.get('balance')}"
                f", revision {account.get('revision')}")
    detail = f" ({printable(result['detail'])})" if result.get("detail") else ""
    return f"rejected: {result.get('reason')}{detail}"


# -- rules -------------------------------------------------------------------


RULE_COLUMNS: list[tuple[str, Callable[[dict], Any]]] = [
    ("id", lambda r: r["id"]),
    ("name", lambda r: r["name"]),
    ("trigger", lambda r: r["trigger"]),
    ("kind", lambda r: r["kind"]),
    ("points", lambda r: r["points"]),
    ("per", lambda r: r["money_amount"] or "-"),
    ("currency", lambda r: r["currency"] or "any"),
    ("status", lambda r: r["status"]),
    ("revision", lambda r: r["revision"]),
]


def _money(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a decimal number", param_hint="--per") from None


@cli.group("rules")
def rules_group() -> None:
    """Earn rules: which events earn how many points."""


@rules_group.command("list")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rules_list(ctx: Context, as_json: bool) -> None:
    """List all earn rules."""
    result = ctx.ledger().list_rules()
    emit(result, as_json, lambda r: _table(r["items"], RULE_COLUMNS))


@rules_group.command("create")
@click.option("--name", required=True)
@click.option("--trigger", type=click.Choice(["signup", "order.completed"]), required=True)
@click.option("--kind", type=click.Choice(["fixed", "conversion"]), required=True)
@click.option("--points", type=int, required=True, help="N for fixed; P in P points per M.")
@click.option("--per", "money_amount", help="M money units, for a conversion rule.")
@click.option("--currency", help="Only orders in this currency (ISO 4217).")
@click.option("--paused", is_flag=True, help="Create the rule PAUSED.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rules_create(ctx: Context, name: str, trigger: str, kind: str, points: int,
                 money_amount: str | None, currency: str | None, paused: bool,
                 as_json: bool) -> None:
    """Create an earn rule."""
    rule = ctx.ledger().create_rule(
        name=name, trigger=trigger, kind=kind, points=points, money_amount=_money(money_amount),
        currency=currency, status="PAUSED" if paused else "ACTIVE")
    emit(rule, as_json)


@rules_group.command("update")
@click.argument("rule_id", type=ROW_ID)
@click.option("--name")
@click.option("--kind", type=click.Choice(["fixed", "conversion"]))
@click.option("--points", type=int)
@click.option("--per", "money_amount")
@click.option("--currency")
@click.option("--any-currency", is_flag=True, help="Remove the currency restriction.")
@click.option("--revision", type=ROW_ID, help="Refuse unless the rule is at this revision.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rules_update(ctx: Context, rule_id: int, name: str | None, kind: str | None,
                 points: int | None, money_amount: str | None, currency: str | None,
                 any_currency: bool, revision: int | None, as_json: bool) -> None:
    """Change a rule; its revision goes up by one."""
    if currency and any_currency:
        raise click.UsageError("give --currency or --any-currency, not both")
    rule = ctx.ledger().update_rule(
        rule_id, expected_revision=revision, name=name, kind=kind, points=points,
        money_amount=_money(money_amount), currency=currency, any_currency=any_currency)
    emit(rule, as_json)


def _set_status(ctx: Context, rule_id: int, status: str, as_json: bool) -> None:
    emit(ctx.ledger().update_rule(rule_id, status=status), as_json)


@rules_group.command("pause")
@click.argument("rule_id", type=ROW_ID)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rules_pause(ctx: Context, rule_id: int, as_json: bool) -> None:
    """Stop a rule from earning points."""
    _set_status(ctx, rule_id, "PAUSED", as_json)


@rules_group.command("resume")
@click.argument("rule_id", type=ROW_ID)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def rules_resume(ctx: Context, rule_id: int, as_json: bool) -> None:
    """Make a paused rule earn points again."""
    _set_status(ctx, rule_id, "ACTIVE", as_json)


# -- program-wide --------------------------------------------------------------


@cli.command("totals")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def totals(ctx: Context, as_json: bool) -> None:
    """Points across the whole program, as in Wix getProgramTotals."""
    emit(ctx.ledger().totals(), as_json)


@cli.command("verify")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def verify(ctx: Context, as_json: bool) -> None:
    """Check every ledger invariant across the database; exit 1 on any violation."""
    report = ctx.ledger().verify()

    def text(r: dict[str, Any]) -> str:
        head = (f"{'ok' if r['ok'] else 'FAILED'}: {r['checked']['accounts']} accounts, "
                f"{r['checked']['entries']} ledger entries, {len(r['violations'])} violations")
        return "\n".join([head] + [json.dumps(v, default=str) for v in r["violations"]])

    emit(report, as_json, text)
    if not report["ok"]:
        sys.exit(1)


@cli.group("events")
def events_group() -> None:
    """Events the worker has processed, with what it did with each."""


EVENT_OUTCOMES = ("earned", "duplicate_order", "duplicate_order_changed", "already_signed_up",
                  "no_points", "no_rule")

EVENT_COLUMNS: list[tuple[str, Callable[[dict], Any]]] = [
    ("processed_at", lambda e: e["processed_at"]),
    ("event_id", lambda e: e["event_id"]),
    ("type", lambda e: e["event_type"]),
    ("contact_id", lambda e: e["contact_id"]),
    ("order_id", lambda e: e["order_id"]),
    ("outcome", lambda e: e["outcome"]),
    ("points", lambda e: e["points"]),
    ("detail", lambda e: json.dumps(e["detail"], sort_keys=True) if e["detail"] else None),
]


@events_group.command("list")
@click.option("--contact-id", help="Events of this contact.")
@click.option("--outcome", type=click.Choice(EVENT_OUTCOMES), help="Events with this outcome.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def events_list(ctx: Context, contact_id: str | None, outcome: str | None, limit: int,
                cursor: str | None, as_json: bool) -> None:
    """List processed events, newest first, with their outcome and payload (in --json)."""
    if contact_id is None and outcome is None:
        raise click.UsageError("give --contact-id, --outcome or both")
    result = ctx.ledger().list_events(contact_id=contact_id, outcome=outcome, limit=limit,
                                      cursor=cursor)
    emit(result, as_json, lambda r: _table(r["items"], EVENT_COLUMNS, r["next_cursor"]))


@cli.group("dlq")
def dlq_group() -> None:
    """Dead letters: messages that could not be applied."""


def _since(value: str | None) -> datetime | None:
    """--since takes an RFC 3339 timestamp or a relative age such as 30m, 12h or 7d."""
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[:-1].isdigit() and value[-1:] in units:
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise click.BadParameter(f"{value!r}: give a timestamp with a time zone "
                                 "(2026-11-25T10:00:00Z) or an age (30m, 12h, 7d)",
                                 param_hint="--since")
    return parsed


LETTER_COLUMNS: list[tuple[str, Callable[[dict], Any]]] = [
    ("id", lambda d: d["id"]),
    ("task_name", lambda d: d["task_name"] or "-"),
    ("reason", lambda d: d["reason"]),
    ("status", lambda d: d["status"]),
    ("attempts", lambda d: d["attempts"]),
    ("last_failed_at", lambda d: d["last_failed_at"]),
    ("last_replay", lambda d: _last_replay(d["replay_outcome"])),
]


def _last_replay(outcome: dict[str, Any] | None) -> str:
    if not outcome:
        return "-"
    return " ".join(str(p) for p in (outcome.get("result"), outcome.get("reason")) if p)


def _reason(ctx: Context, reason: str | None, option: str = "--reason") -> str | None:
    """A reason code must be one the product documents or one that letters carry."""
    if reason is None:
        return None
    known = set(DEAD_LETTER_REASONS)
    if reason not in known:
        known |= set(ctx.ledger().dead_letter_stats()["by_reason"])
    if reason not in known:
        raise click.BadParameter(f"unknown reason code {reason!r}; known: "
                                 f"{', '.join(sorted(known))}", param_hint=option)
    return reason


@dlq_group.command("list")
@click.option("--reason", help="Only letters with this reason code.")
@click.option("--status", type=click.Choice(["pending", "replayed", "discarded"]))
@click.option("--since", help="Only letters last failed at or after: 2026-11-25T10:00:00Z, 12h, 7d.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def dlq_list(ctx: Context, reason: str | None, status: str | None, since: str | None,
             limit: int, cursor: str | None, as_json: bool) -> None:
    """List dead letters, oldest first."""
    result = ctx.ledger().list_dead_letters(reason=_reason(ctx, reason), status=status, since=_since(since),
                                            limit=limit, cursor=cursor)
    emit(result, as_json, lambda r: _table(r["items"], LETTER_COLUMNS, r["next_cursor"]))


#: Characters of a payload `dlq show` prints unless given --full.
SHOWN_PAYLOAD = 4096


@dlq_group.command("show")
@click.argument("letter_id", type=ROW_ID)
@click.option("--full", is_flag=True, help=f"The whole payload, not its first {SHOWN_PAYLOAD} "
                                            "characters.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def dlq_show(ctx: Context, letter_id: int, full: bool, as_json: bool) -> None:
    """Show one dead letter, raw payload and headers included."""
    letter = ctx.ledger().dead_letter(letter_id)
    payload = letter.get("payload") or ""
    if not full and len(payload) > SHOWN_PAYLOAD:
        letter = {**letter, "payload": payload[:SHOWN_PAYLOAD],
                  "payload_truncated": {"shown_chars": SHOWN_PAYLOAD, "total_chars": len(payload),
                                        "hint": "--full shows all of it"}}
    emit(letter, as_json)


@dlq_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def dlq_stats(ctx: Context, as_json: bool) -> None:
    """Count dead letters per reason and status."""
    stats = ctx.ledger().dead_letter_stats()

    def text(st: dict[str, Any]) -> str:
        rows = [{"reason": reason, **counts} for reason, counts in st["by_reason"].items()]
        columns: list[tuple[str, Callable[[dict], Any]]] = [
            ("reason", lambda r: r["reason"]), ("pending", lambda r: r["pending"]),
            ("replayed", lambda r: r["replayed"]), ("discarded", lambda r: r["discarded"])]
        return _table(rows, columns) + f"\ntotal: {st['total']}"

    emit(stats, as_json, text)


@dlq_group.command("replay")
@click.option("--id", "ids", type=ROW_ID, multiple=True, help="A letter id; repeat for more.")
@click.option("--reason", help="Every pending letter with this reason.")
@click.option("--since", help="Every pending letter first failed at or after this time or age.")
@click.option("--all", "all_", is_flag=True, help="Every pending letter.")
@click.option("--dry-run", is_flag=True, help="Show what each letter would do; write nothing.")
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER",
              help="Recorded on each replayed letter.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def dlq_replay(ctx: Context, ids: tuple[int, ...], reason: str | None, since: str | None,
               all_: bool, dry_run: bool, actor: str, as_json: bool) -> None:
    """Run pending letters through their original task again.

    A letter whose event was already applied changes nothing. A letter that fails
    again stays pending with one more attempt. Exit 1 if any letter failed.
    """
    if sum([bool(ids), reason is not None, since is not None, all_]) != 1:
        raise click.UsageError("give exactly one of --id | --reason | --since | --all")
    from loyalty import replay as replaying

    reason = _reason(ctx, reason)
    ledger = ctx.ledger()
    if ids:
        # Named letters are all reported, a letter that is not pending as "skipped".
        letter_ids = list(dict.fromkeys(ids))
        for letter_id in letter_ids:
            ledger.dead_letter(letter_id)  # one-line error if it does not exist at all
    else:
        # Every matching letter: a default cap would leave the rest pending unsaid.
        letter_ids = ledger.pending_dead_letter_ids(reason=reason, since=_since(since),
                                                    limit=None)
    label = "dry run" if dry_run else "replaying"
    with click.progressbar(length=len(letter_ids), label=label, file=sys.stderr,
                           show_pos=True) as bar:
        report = replaying.replay(ledger, letter_ids, dry_run=dry_run, actor=actor,
                                  progress=bar.update)

    def text(r: dict[str, Any]) -> str:
        lines = []
        for item in r["items"]:
            effect = item.get("effect") or {}
            if effect:
                what = (f"{effect.get('outcome') or effect.get('status')}"
                        f" points={effect.get('points', '-')}")
            else:
                what = ": ".join(printable(p) for p in (item.get("reason"), item.get("detail"))
                                 if p)
            lines.append(f"{item['id']}  {item['result']}  {printable(item.get('task_name'))}"
                         f"  {what}")
        counts = ", ".join(f"{k}={v}" for k, v in sorted(r["summary"].items())) or "nothing pending"
        return "\n".join([*lines, f"{'dry run: ' if r['dry_run'] else ''}{counts}"])

    emit(report, as_json, text)
    if any(i["result"] in ("failed", "would_fail") for i in report["items"]):
        sys.exit(1)


@dlq_group.command("discard")
@click.argument("letter_id", type=ROW_ID)
@click.option("--why", required=True, help="Why this letter must not be replayed.")
@click.option("--actor", required=True, help="Who decided.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def dlq_discard(ctx: Context, letter_id: int, why: str, actor: str, as_json: bool) -> None:
    """Mark a pending letter discarded; it is kept, with the reason and the actor."""
    letter = ctx.ledger().discard_dead_letter(letter_id, why=why, actor=actor)
    emit(letter, as_json, lambda d: f"discarded dead letter {d['id']} ({d['reason']})")


def _error(message: str) -> None:
    """One line on stderr, whatever the message quotes (an id with a newline stays escaped)."""
    click.echo(f"error: {printable(message)}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors and exit codes instead of tracebacks."""
    try:
        cli.main(args=argv, prog_name="loyalty", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        # `loyalty` or `loyalty dlq` alone: asking for help is not an error.
        click.echo(exc.ctx.get_help() if exc.ctx else cli.get_help(click.Context(cli)))
        sys.exit(0)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        _error(exc.format_message())
        sys.exit(2)
    except NotMigratedError as exc:
        _error(str(exc))
        sys.exit(3)
    except (InvalidPayload, InvalidCursor, InvalidRule) as exc:
        _error(str(exc))
        sys.exit(2)
    except LoyaltyError as exc:
        _error(str(exc))
        sys.exit(1)
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _error(f"{type(exc).__name__}: {message}")
        sys.exit(1)


if __name__ == "__main__":
    main()
