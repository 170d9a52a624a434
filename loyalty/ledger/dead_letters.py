"""Dead letters: messages kept because they could not be applied, and their replay.

A letter keeps the body as it arrived. Replay runs pending letters through the
work of their original tasks, and a letter's ledger write and its change to
`replayed` commit together.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from loyalty import views
from loyalty.errors import (
    KEPT_UNREAD,
    DeadLetterNotFound,
    DeadLetterNotPending,
    InvalidPayload,
    LoyaltyError,
    NotReplayable,
    TransientError,
)
from loyalty.ledger import statements as sql
from loyalty.ledger.accounts import page
from loyalty.ledger.adjusting import adjust_work
from loyalty.ledger.boundary import guarded, read, run
from loyalty.ledger.earning import events_work
from loyalty.ledger.entries import EventOutcome
from loyalty.tables import dead_letters
from schemas.events import (
    ActivityEvent,
    AdjustPointsRequest,
    Contract,
    OrderCompletedEvent,
    OrderRefundedEvent,
    SignupEvent,
)

Decode = Callable[[Mapping[Any, Any]], Contract]


class _Rollback(Exception):
    """Carries a dry run's outcome out of a transaction that must not commit."""

    def __init__(self, outcome: dict[str, Any]) -> None:
        super().__init__("dry run")
        self.outcome = outcome


def add_dead_letter(engine: Engine, *, task_name: str | None, message_id: str | None,
                    payload: str, headers: Mapping[Any, Any], reason: str,
                    error_detail: str) -> int:
    """Keep a message that cannot be applied; a re-delivery of it counts one more attempt."""
    ins = pg_insert(dead_letters).values(
        task_name=_storable(task_name),
        message_id=_storable(message_id),
        payload=_storable(payload),
        headers=_storable_json(json.loads(json.dumps(headers, default=str))),
        reason=reason,
        error_detail=_storable(error_detail[:4000]),
    )
    statement = ins.on_conflict_do_update(
        index_elements=[dead_letters.c.message_id],
        index_where=dead_letters.c.message_id.isnot(None),
        set_={
            "attempts": dead_letters.c.attempts + 1,
            "last_failed_at": func.now(),
            "reason": ins.excluded.reason,
            "error_detail": ins.excluded.error_detail,
            "status": "pending",
        },
    ).returning(dead_letters.c.id)
    letter_id: int = run(engine, lambda conn: conn.execute(statement).scalar_one())
    return letter_id


def dead_letter(engine: Engine, letter_id: int) -> dict[str, Any]:
    row = read(engine, lambda conn: conn.execute(
        select(dead_letters).where(dead_letters.c.id == letter_id)).mappings().first())
    if row is None:
        raise DeadLetterNotFound(f"no dead letter with id {letter_id}")
    return views.dead_letter_json(row)


def dead_letter_stats(engine: Engine) -> dict[str, Any]:
    query = (select(dead_letters.c.reason, dead_letters.c.status, func.count())
             .group_by(dead_letters.c.reason, dead_letters.c.status)
             .order_by(dead_letters.c.reason, dead_letters.c.status))
    rows = read(engine, lambda conn: conn.execute(query).all())
    by_reason: dict[str, dict[str, int]] = {}
    by_status = dict.fromkeys(("pending", "replayed", "discarded"), 0)
    for reason, status, count in rows:
        by_reason.setdefault(reason, dict.fromkeys(by_status, 0))[status] = count
        by_status[status] += count
    return {"by_reason": by_reason, "by_status": by_status, "total": sum(by_status.values())}


def list_dead_letters(engine: Engine, *, reason: str | None = None, status: str | None = None,
                      since: datetime | None = None, limit: int = 50,
                      cursor: str | None = None) -> dict[str, Any]:
    query = select(dead_letters).order_by(dead_letters.c.id)
    if reason:
        query = query.where(dead_letters.c.reason == reason)
    if status:
        query = query.where(dead_letters.c.status == status)
    if since:
        query = query.where(dead_letters.c.last_failed_at >= since)
    if cursor:
        query = query.where(dead_letters.c.id > views.decode_int_cursor(cursor))
    return page(engine, query, limit, "id", views.dead_letter_json)


def pending_dead_letter_ids(engine: Engine, *, ids: list[int] | None = None,
                            reason: str | None = None, since: datetime | None = None,
                            limit: int | None = 100_000) -> list[int]:
    """The pending letters a replay would take, oldest first; all of them without a limit."""
    query = (select(dead_letters.c.id).where(dead_letters.c.status == "pending")
             .order_by(dead_letters.c.id).limit(limit))
    if ids is None:
        # By reason, time or all: never the letters the worker refused to read.
        query = query.where(dead_letters.c.reason.not_in(sorted(KEPT_UNREAD)))
    if ids is not None:
        query = query.where(dead_letters.c.id.in_(ids))
    if reason is not None:
        query = query.where(dead_letters.c.reason == reason)
    if since is not None:
        query = query.where(dead_letters.c.first_failed_at >= since)
    return list(read(engine, lambda conn: conn.execute(query).scalars().all()))


def replay_dead_letter(engine: Engine, letter_id: int, decode: Decode, *,
                       dry_run: bool = False, actor: str | None = None) -> dict[str, Any]:
    """One letter on its own: for a chunk the database refused as a whole.

    If even the letter alone is refused, it stays pending with one more attempt
    and the reason, recorded in a transaction of its own.
    """
    try:
        return replay_dead_letters(engine, [letter_id], decode, dry_run=dry_run, actor=actor)[0]
    except (DeadLetterNotFound, TransientError):
        raise
    except LoyaltyError as exc:
        report = {"id": letter_id, "task_name": dead_letter(engine, letter_id)["task_name"],
                  "result": "would_fail" if dry_run else "failed",
                  "reason": exc.reason, "detail": str(exc)}
        if not dry_run:
            again = (update(dead_letters)
                     .where(dead_letters.c.id == letter_id, dead_letters.c.status == "pending")
                     .values(attempts=dead_letters.c.attempts + 1, last_failed_at=func.now(),
                             replay_outcome={**report, "actor": actor}))
            run(engine, lambda conn: conn.execute(again))
        return report


def replay_dead_letters(engine: Engine, letter_ids: Sequence[int], decode: Decode, *,
                        dry_run: bool = False, actor: str | None = None
                        ) -> list[dict[str, Any]]:
    """Run pending letters through their original tasks' work, in one transaction.

    A letter's ledger write and its change to `replayed` commit together, so a
    letter is never marked replayed without its effect, nor applied twice by two
    operators replaying at once. Events are applied as one batch; a letter that
    fails goes back to pending with one more attempt. A dry run rolls it all back.
    """
    ids = list(dict.fromkeys(letter_ids))

    def work(conn: Connection) -> list[dict[str, Any]]:
        rows = {row["id"]: row for row in conn.exec_driver_sql(
            sql.LOCK_LETTERS, {"ids": ids}).mappings()}
        for letter_id in ids:
            if letter_id not in rows:
                raise DeadLetterNotFound(f"no dead letter with id {letter_id}")
        reports: dict[int, dict[str, Any]] = {}
        outcomes: dict[int, Any] = {}
        batch: list[tuple[int, SignupEvent | OrderCompletedEvent | ActivityEvent
                          | OrderRefundedEvent]] = []
        for letter_id in ids:
            letter = rows[letter_id]
            reports[letter_id] = {"id": letter_id, "task_name": letter["task_name"]}
            if letter["status"] != "pending":
                reports[letter_id].update(result="skipped",
                                          reason=f"letter is {letter['status']}")
                continue
            if letter["reason"] in KEPT_UNREAD:
                reports[letter_id].update(
                    result="skipped", reason=f"letters kept as {letter['reason']} are "
                    "never replayed; discard them")
                continue
            try:
                message = decode(letter)
            except LoyaltyError as exc:
                outcomes[letter_id] = exc
                continue
            if isinstance(message, SignupEvent | OrderCompletedEvent | ActivityEvent
                          | OrderRefundedEvent):
                batch.append((letter_id, message))
            elif isinstance(message, AdjustPointsRequest):
                outcomes[letter_id] = guarded(conn, adjust_work(message))
            else:
                raise NotReplayable(f"{type(message).__name__} is not a ledger message")
        results = events_work(conn, [m for _, m in batch]) if batch else []
        outcomes.update({letter_id: r for (letter_id, _), r in zip(batch, results, strict=True)})
        done, failed = [], []
        for letter_id in ids:
            if letter_id not in outcomes:
                continue
            report, outcome = reports[letter_id], outcomes[letter_id]
            if isinstance(outcome, LoyaltyError):
                report.update(result="would_fail" if dry_run else "failed",
                              reason=outcome.reason, detail=str(outcome))
                failed.append({"lid": letter_id, "reason": outcome.reason,
                               "detail": str(outcome)[:4000],
                               "outcome": {**report, "actor": actor}})
            else:
                effect = outcome.as_dict() if isinstance(outcome, EventOutcome) else outcome
                report.update(result="would_replay" if dry_run else "replayed", effect=effect)
                done.append({"lid": letter_id, "outcome": {**report, "actor": actor}})
        if dry_run:
            raise _Rollback({"items": [reports[i] for i in ids]})
        if done:
            conn.exec_driver_sql(sql.LETTERS_REPLAYED, {
                "ids": [d["lid"] for d in done],
                "outcomes": [json.dumps(d["outcome"]) for d in done]})
        if failed:
            conn.exec_driver_sql(sql.LETTERS_FAILED_AGAIN, {
                "ids": [f["lid"] for f in failed],
                "outcomes": [json.dumps(f["outcome"]) for f in failed]})
        return [reports[i] for i in ids]

    try:
        return run(engine, work)
    except _Rollback as rolled_back:
        items: list[dict[str, Any]] = rolled_back.outcome["items"]
        return items


def discard_dead_letter(engine: Engine, letter_id: int, *, why: str,
                        actor: str) -> dict[str, Any]:
    """Keep the letter, but mark it as deliberately not to be replayed, and by whom."""
    if not why.strip() or not actor.strip():
        raise InvalidPayload("a discard needs a reason (--why) and an actor (--actor)")

    def work(conn: Connection) -> Mapping[Any, Any]:
        row = conn.execute(
            update(dead_letters)
            .where(dead_letters.c.id == letter_id, dead_letters.c.status == "pending")
            .values(status="discarded", discarded_at=func.now(), discarded_by=actor,
                    discard_reason=why)
            .returning(dead_letters)
        ).mappings().first()
        if row is None:
            current = conn.execute(select(dead_letters.c.status).where(
                dead_letters.c.id == letter_id)).scalar()
            if current is None:
                raise DeadLetterNotFound(f"no dead letter with id {letter_id}")
            raise DeadLetterNotPending(f"dead letter {letter_id} is {current}, not pending")
        return row

    return views.dead_letter_json(run(engine, work))


def _storable(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; a dead letter must be storable whatever it holds."""
    return text.replace("\x00", "\\x00") if text is not None else None


def _storable_json(value: Any) -> Any:
    """jsonb refuses NUL as well, in keys and in values."""
    if isinstance(value, str):
        return _storable(value)
    if isinstance(value, dict):
        return {_storable(k): _storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable_json(v) for v in value]
    return value
