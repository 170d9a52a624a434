"""Handler of `loyalty.deadletters.replay` (queue `loyalty.admin`), so replays can be
scheduled."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loyalty.errors import DEAD_LETTER_REASONS, InvalidPayload
from schemas.events import TASK_OF, ReplayRequest

if TYPE_CHECKING:
    from loyalty.ledger import Ledger


def replay(ledger: Ledger, request: ReplayRequest) -> dict[str, Any]:
    # loyalty.replay reads the task table, which names this handler: imported on use.
    from loyalty import replay as replaying

    if request.reason is not None and request.reason not in DEAD_LETTER_REASONS \
            and request.reason not in ledger.dead_letter_stats()["by_reason"]:
        # As `loyalty dlq replay --reason`: a typo must not look like "nothing to replay".
        raise InvalidPayload(f"reason: unknown reason code {request.reason!r}")
    ids = ledger.pending_dead_letter_ids(ids=request.ids, reason=request.reason,
                                         since=request.since, limit=request.limit)
    return replaying.replay(ledger, ids, dry_run=request.dry_run,
                            actor=TASK_OF[ReplayRequest])
