"""Taking event messages from the broker in batches, and applying each batch in one transaction.

Stock Celery runs one Request per message: the main process builds it, ships it
to a pool process, and the task commits one transaction. That machinery, not
PostgreSQL, bounds a worker to a few hundred events a second. Here the batched tasks
of the task table (`tasks.table`) get a Celery *strategy* of their own (the hook
celery-batches also uses), in three parts:

- `intake` (the main process): decodes each fresh message and buffers it; the buffer
  is flushed when it holds LOYALTY_BATCH_SIZE events, or when its oldest one has
  waited LOYALTY_BATCH_WAIT_MS, as one job to a pool process;
- `job` (a pool process): validates every event, applies the valid ones with one
  set-based transaction (`Ledger.apply_events`), and retries or dead-letters each
  failed event on its own;
- `acks` (the main process): acknowledges the batch's messages only after that
  commit, with one command where the broker allows it, one small class per broker.

Anything unusual goes through the stock per-message path instead, which has its
own retry, crash counting and poison handling: a message with an ETA (a retry),
a re-delivered one (its batch may have crashed, so it must be tried alone), a
non-JSON (signed) body, or a body that is not a plain `[args, kwargs, embed]`.
A batch whose whole transaction fails, or whose pool process dies, is requeued
and its messages come back re-delivered, so one by one.
"""
