"""The highest request rate a server holds with p99 latency under an SLO.

One closed-loop run measures the server's maximum throughput X (an upper bound: an
open loop cannot sustain more than the server can complete). Open-loop runs then
bisect between a rate that met the SLO and one that did not, starting at 0.75 X. A
rate "meets" the SLO when it was sustained (>= 95 % of it sent and answered), had no
errors, and its p99, counted from the intended send times, stayed under the SLO.

Machines shared with other work (CI runners, this project's 2-core boxes) stall a
process now and then for tens of milliseconds, which lands in a p99. A close miss
(the rate was nearly held, only the tail was over) is therefore run once more, and
the rate fails only if both runs miss.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from bench.load import LoadResult, run_load

DEFAULT_SLO_MS = 20.0
DEFAULT_CONNECTIONS = 32
# A miss that still delivered this share of the offered rate is run once more.
CLOSE_MISS_SHARE = 0.9


@dataclass
class RateSearch:
    """Result of :func:`find_max_rate`: the best rate found and every run that led to it."""
    slo_ms: float
    max_rate: float                    # highest offered rate that met the SLO; 0 when none did
    best: LoadResult | None            # the run at max_rate
    closed: LoadResult                 # the closed-loop probe
    trials: list[LoadResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"slo_ms": self.slo_ms, "max_rate": self.max_rate,
                "best": self.best.to_dict() if self.best else None,
                "closed": self.closed.to_dict(), "trials": [t.to_dict() for t in self.trials]}


def find_max_rate(url: str, bodies: list[bytes], *, slo_ms: float = DEFAULT_SLO_MS,
                  connections: int = DEFAULT_CONNECTIONS, duration_s: int = 3, steps: int = 4,
                  on_trial: Callable[[LoadResult], None] | None = None,
                  measure: Callable[[Callable[[], LoadResult]], LoadResult] | None = None,
                  retry_close_misses: bool = True) -> RateSearch:
    """Search the highest open-loop rate of ``url`` that meets ``slo_ms``.

    ``steps`` open-loop runs after the first (so ``steps + 1`` in all, plus the closed
    probe, a 1 s warm-up and any re-runs of close misses), each ``duration_s`` long.
    ``on_trial`` sees every run as it ends (progress); ``measure`` wraps each run (e.g.
    to account server CPU).
    """
    measure = measure or (lambda run: run())
    closed = measure(lambda: run_load(url, bodies, connections=connections, duration_s=duration_s,
                                      warmup_s=1))
    if on_trial:
        on_trial(closed)
    search = RateSearch(slo_ms=slo_ms, max_rate=0.0, best=None, closed=closed)
    ceiling = closed.achieved_rate
    if closed.requests == 0 or ceiling <= 0:
        return search
    low, high = 0.0, ceiling * 1.05
    rate = ceiling * 0.75

    def trial(rate: float) -> LoadResult:
        result = measure(lambda: run_load(url, bodies, rate=rate, connections=connections,
                                          duration_s=duration_s, warmup_s=0))
        search.trials.append(result)
        if on_trial:
            on_trial(result)
        return result

    for _ in range(steps + 1):
        result = trial(rate)
        if not result.meets(slo_ms) and retry_close_misses and result.achieved_rate >= CLOSE_MISS_SHARE * rate:
            again = trial(rate)
            if again.meets(slo_ms):
                result = again
        if result.meets(slo_ms):
            low = rate
            if rate > search.max_rate:
                search.max_rate, search.best = rate, result
        else:
            high = rate
        rate = (low + high) / 2 if low > 0 else high / 2
    return search
