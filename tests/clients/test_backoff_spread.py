"""A herd of clients cut at once comes back spread out, not in lockstep."""
from __future__ import annotations

from collections import Counter

from imagegen_client import Backoff


def first_waits(backoffs: list[Backoff], failures: int = 1) -> list[float]:
    for backoff in backoffs:
        for _ in range(failures - 1):
            backoff.next_delay()
    return [backoff.next_delay() for backoff in backoffs]


def test_clients_started_together_draw_their_own_delays() -> None:
    waits = first_waits([Backoff(base=1.0) for _ in range(1000)])
    assert len(set(waits)) == 1000
    # Full jitter: spread evenly over [0, base); no tenth of the window holds much more than a tenth.
    tenths = Counter(int(w * 10) for w in waits)
    assert set(tenths) == set(range(10)) and max(tenths.values()) < 150, tenths


def test_the_herd_keeps_spreading_as_failures_double_the_window() -> None:
    waits = first_waits([Backoff(base=0.5, cap=30.0) for _ in range(1000)], failures=4)
    assert max(waits) <= 4.0 and sum(1 for w in waits if w < 0.5) < 200  # U(0, 4 s): about 1 in 8 under 0.5 s


def test_a_seed_from_the_client_makes_its_spread_reproducible() -> None:
    assert first_waits([Backoff(seed="client-7")], 3) == first_waits([Backoff(seed="client-7")], 3)
    assert first_waits([Backoff(seed="client-7")]) != first_waits([Backoff(seed="client-8")])
