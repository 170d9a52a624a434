"""`loyalty dlq`: dead letters, their replay and their discard."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from loyalty.cli.context import ROW_ID, Context, pass_ctx
from loyalty.cli.output import JSON_HELP, Columns, emit, printable, table
from loyalty.errors import DEAD_LETTER_REASONS


@click.group("dlq")
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


LETTER_COLUMNS: Columns = [
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
    emit(result, as_json, lambda r: table(r["items"], LETTER_COLUMNS, r["next_cursor"]))


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
        columns: Columns = [
            ("reason", lambda r: r["reason"]), ("pending", lambda r: r["pending"]),
            ("replayed", lambda r: r["replayed"]), ("discarded", lambda r: r["discarded"])]
        return table(rows, columns) + f"\ntotal: {st['total']}"

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
