"""`loyalty.deadletters.replay` on queue `loyalty.admin`, so replays can be scheduled."""

from typing import Any

from celery import Task

from loyalty import replay as replaying
from loyalty.errors import DEAD_LETTER_REASONS, InvalidPayload
from schemas.events import ReplayRequest
from worker.app import app
from worker.execution import run


def _replay(ledger: Any, request: ReplayRequest) -> dict[str, Any]:
    if request.reason is not None and request.reason not in DEAD_LETTER_REASONS \
            and request.reason not in ledger.dead_letter_stats()["by_reason"]:
        # As `loyalty dlq replay --reason`: a typo must not look like "nothing to replay".
        raise InvalidPayload(f"reason: unknown reason code {request.reason!r}")
    ids = ledger.pending_dead_letter_ids(ids=request.ids, reason=request.reason,
                                         since=request.since, limit=request.limit)
    return replaying.replay(ledger, ids, dry_run=request.dry_run, actor="loyalty.deadletters.replay")


@app.task(name="loyalty.deadletters.replay", bind=True, ignore_result=False)
def replay(self: Task, *args: Any, **kwargs: Any) -> Any:
    return run(self, ReplayRequest, _replay, args, kwargs)
