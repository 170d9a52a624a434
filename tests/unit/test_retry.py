import random

import pytest

from loyalty.retry import backoff_seconds, should_retry


@pytest.mark.parametrize(("retries", "low", "high"),
                         [(0, 0.5, 1), (1, 1, 2), (3, 4, 8), (6, 32, 64), (10, 60, 120),
                          (50, 60, 120)])
def test_backoff_grows_exponentially_up_to_the_cap(retries: int, low: float, high: float) -> None:
    rand = random.Random(retries)
    for _ in range(50):
        assert low <= backoff_seconds(retries, cap=120, rand=rand) <= high


def test_backoff_is_jittered() -> None:
    rand = random.Random(1)
    assert len({backoff_seconds(4, cap=120, rand=rand) for _ in range(20)}) > 10


@pytest.mark.parametrize(("retries", "maximum", "expected"),
                         [(0, 5, True), (4, 5, True), (5, 5, False), (0, 0, False)])
def test_should_retry(retries: int, maximum: int, expected: bool) -> None:
    assert should_retry(retries, maximum) is expected
