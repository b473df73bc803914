"""The highest request rate a server holds with p99 latency under an SLO.

One closed-loop run measures the server's maximum throughput X (an upper bound: an
open loop cannot sustain more than the server can complete). Open-loop runs then
bisect between a rate that met the SLO and one that did not, starting at 0.75 X. A
rate "meets" the SLO when it was sustained (>= 95 % of it sent and answered), had no
errors, and its p99, counted from the intended send times, stayed under the SLO.

Machines shared with other work (CI runners, this project's 2-core boxes) stall a
process now and then for tens of milliseconds, which lands in a p99. Two defences:

* a close miss (the rate was nearly held, only the tail was over) is run once more,
  and a third time when the two runs disagree: the rate holds if two of its three runs do. So is
  any miss of the first rate (0.75 X): failing it halves the range the bisection has left, and a
  stall of a few hundred milliseconds can take a 2 s run under 90 % of its rate (once cut a
  server's max from about 25,000 req/s to 18,610 in a ``make demo``, with every other server's
  p99 of that turn 128-244 ms). The third run is the other side of that defence: a rate held once
  in two runs is a coin toss, not a rate the server holds (a ``make demo`` took granian's max
  as 34,336 req/s from a miss and a pass there, and 80 % of it was then held at p99 10.8,
  74.5 and 54.5 ms);
* :func:`find_max_rates` searches several servers at once, taking turns run by run,
  so that a burst of outside load falls on all of them alike instead of on whichever
  server happened to be measured at the time: ratios between servers stay fair.

A rate missed only just (held, p99 within twice the SLO) before any rate has held, most often the
first, means the max is close below it: the next rate is 0.85 of it, not half, once per search
(halving put three-step searches that missed
0.75 X at about 0.66 X at best, where a server whose CPU per request falls as its rate rises
costs more: a ``make demo`` measured granian's rtb-large max at 15,548 req/s and 62 us per
request in the comparison and 21,721 req/s and 46 us in the sweep of the same run).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from bench.load import LoadResult, run_load

DEFAULT_SLO_MS = 20.0
DEFAULT_CONNECTIONS = 32
# A miss that still delivered this share of the offered rate is run once more.
CLOSE_MISS_SHARE = 0.9
FIRST_SHARE = 0.75        # first open-loop rate, as a share of the closed-loop maximum
HIGH_SHARE = 1.05         # upper end of the bisection, likewise
STEP_DOWN_SHARE = 0.85    # next rate after the first near miss while none has held, as a share of it
NEAR_MISS_P99_SHARE = 2.0  # a near miss: held (>= CLOSE_MISS_SHARE) with p99 within this many SLOs
# Open loop: each connection should carry at least this many requests/s (see open_loop_connections).
MIN_RATE_PER_CONNECTION = 100
MIN_OPEN_CONNECTIONS = 4


def open_loop_connections(rate: float, max_connections: int) -> int:
    """How many connections an open-loop run at ``rate`` uses: one per 100 req/s, 4 to ``max_connections``.

    A connection that waits long between its requests is not what a front end does (it
    takes a connection when it has a request), and it costs servers that give a whole
    thread to a connection: a gunicorn sync worker accepts the idle connection (wrk
    reconnects as soon as sync closes the last one) and blocks reading it, and a gthread
    worker blocks a thread on a fresh connection until its first request; requests on
    other connections queue meanwhile. With 32 connections at 90 req/s of 100 rows,
    that took the p99 of sync and gthread from 5 ms to 120-240 ms (gevent: 5 ms either
    way). Tying connections to the rate keeps each one busy.
    """
    wanted = max(MIN_OPEN_CONNECTIONS, int(rate // MIN_RATE_PER_CONNECTION))
    return max(1, min(max_connections, wanted))


@dataclass
class RateSearch:
    """One server's search: the best rate found and every run that led to it."""
    slo_ms: float
    max_rate: float = 0.0              # highest offered rate that met the SLO; 0 when none did
    best: LoadResult | None = None     # the run at max_rate
    closed: LoadResult | None = None   # the closed-loop probe
    trials: list[LoadResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"slo_ms": self.slo_ms, "max_rate": self.max_rate,
                "best": self.best.to_dict() if self.best else None,
                "closed": self.closed.to_dict() if self.closed else None,
                "trials": [t.to_dict() for t in self.trials]}


class Bisection:
    """The search's decisions, apart from running anything: feed it results, ask for rates.

    ``start(closed)`` with the closed-loop probe, then repeatedly ``next_rate()`` (None
    when done) and ``record(result)`` of a run at that rate.
    """

    def __init__(self, slo_ms: float, steps: int, retry_close_misses: bool = True):
        self.search = RateSearch(slo_ms=slo_ms)
        self.steps_left = steps + 1
        self.retry_close_misses = retry_close_misses
        self.low = self.high = 0.0
        self.rate: float | None = None
        self.verdicts: list[bool] = []    # whether each run at the current rate met the SLO
        self.stepped_down = False

    def start(self, closed: LoadResult) -> None:
        self.search.closed = closed
        if closed.requests == 0 or closed.achieved_rate <= 0:
            self.steps_left = 0               # nothing answered: no rate to search
            return
        self.high = closed.achieved_rate * HIGH_SHARE
        self.rate = closed.achieved_rate * FIRST_SHARE

    def next_rate(self) -> float | None:
        return self.rate if self.steps_left > 0 else None

    def record(self, result: LoadResult) -> None:
        self.search.trials.append(result)
        rate = self.rate
        self.verdicts.append(result.meets(self.search.slo_ms))
        held = self._held(result)
        if held is None:
            return                            # same rate once more
        self.verdicts = []
        self.steps_left -= 1
        if held:                              # result is a run that met the SLO (the last one)
            self.low = rate
            if rate > self.search.max_rate:
                self.search.max_rate, self.search.best = rate, result
        else:
            self.high = rate
        if self.low > 0:
            self.rate = (self.low + self.high) / 2
        elif not self.stepped_down and self._near_miss(result, rate):
            self.stepped_down = True          # once: a server far below would take many such steps
            self.rate = rate * STEP_DOWN_SHARE
        else:
            self.rate = self.high / 2

    def _held(self, result: LoadResult) -> bool | None:
        """Whether the current rate held, from its runs so far (``result`` the last); None: run it again."""
        if self.verdicts == [False]:
            # the first rate is retried whatever the miss: missing it halves the range left to search
            first = len(self.search.trials) == 1
            if self.retry_close_misses and (first or result.achieved_rate >= CLOSE_MISS_SHARE * self.rate):
                return None
            return False
        if self.verdicts == [False, True]:
            return None                       # one miss, one pass: a third run decides
        return self.verdicts[-1]              # [True], [False, False] or [False, True, the decider]

    def _near_miss(self, result: LoadResult, rate: float) -> bool:
        return (result.errors == 0 and result.achieved_rate >= CLOSE_MISS_SHARE * rate
                and result.latency_ms["p99"] <= NEAR_MISS_P99_SHARE * self.search.slo_ms)


@dataclass
class SearchedServer:
    """A server to search: where it is, what to send, and how to wrap each run (CPU accounting)."""
    url: str
    bodies: list[bytes]
    measure: Callable[[Callable[[], LoadResult]], LoadResult] = lambda run: run()
    on_trial: Callable[[LoadResult], None] | None = None


def find_max_rates(servers: list[SearchedServer], *, slo_ms: float = DEFAULT_SLO_MS,
                   connections: int = DEFAULT_CONNECTIONS, duration_s: int = 3, steps: int = 4,
                   retry_close_misses: bool = True) -> list[RateSearch]:
    """Search every server's highest open-loop rate under ``slo_ms``, taking turns run by run.

    Per server: a closed-loop probe on ``connections`` connections (after a 1 s warm-up),
    then ``steps + 1`` open-loop runs of ``duration_s`` seconds on at most ``connections``
    (:func:`open_loop_connections`), plus re-runs of close misses (a third run where a miss and a
    pass disagree).
    """
    searches = [Bisection(slo_ms, steps, retry_close_misses) for _ in servers]

    def run(server: SearchedServer, rate: float | None, warmup_s: int) -> LoadResult:
        used = connections if rate is None else open_loop_connections(rate, connections)
        result = server.measure(lambda: run_load(server.url, server.bodies, rate=rate, connections=used,
                                                 duration_s=duration_s, warmup_s=warmup_s))
        if server.on_trial:
            server.on_trial(result)
        return result

    for server, search in zip(servers, searches):
        search.start(run(server, None, 1))
    while any(s.next_rate() is not None for s in searches):
        for server, search in zip(servers, searches):
            rate = search.next_rate()
            if rate is not None:
                search.record(run(server, rate, 0))
    return [s.search for s in searches]


def find_max_rate(url: str, bodies: list[bytes], *, slo_ms: float = DEFAULT_SLO_MS,
                  connections: int = DEFAULT_CONNECTIONS, duration_s: int = 3, steps: int = 4,
                  on_trial: Callable[[LoadResult], None] | None = None,
                  measure: Callable[[Callable[[], LoadResult]], LoadResult] | None = None,
                  retry_close_misses: bool = True) -> RateSearch:
    """:func:`find_max_rates` for one server at ``url``."""
    server = SearchedServer(url, bodies, measure or (lambda run: run()), on_trial)
    return find_max_rates([server], slo_ms=slo_ms, connections=connections, duration_s=duration_s,
                          steps=steps, retry_close_misses=retry_close_misses)[0]
