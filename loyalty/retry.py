"""When to try a failed message again: a pure decision, applied by the worker."""

from __future__ import annotations

import random


def backoff_seconds(retries_so_far: int, *, cap: int, base: float = 1.0,
                    rand: random.Random | None = None) -> float:
    """Exponential delay with "equal jitter": between half and all of base * 2**n, capped.

    Jitter spreads a burst of failures (a database restart fails every in-flight
    message at once) so the retries do not all land in the same second.
    """
    ceiling = min(float(cap), base * 2 ** max(0, retries_so_far))
    pick = (rand or random).uniform(0.5, 1.0)
    return round(ceiling * pick, 3)


def should_retry(retries_so_far: int, max_retries: int) -> bool:
    return retries_so_far < max_retries
