"""The rate search's decisions, on results of a server of known capacity."""
from __future__ import annotations

import pytest

from bench.load import LoadResult
from bench.search import Bisection


def result(rate, *, p99, achieved=None, errors=0):
    achieved = rate if achieved is None else achieved
    latency = {"p50": 1.0, "p90": 2.0, "p99": p99, "p99.9": p99, "mean": 1.0, "max": p99}
    return LoadResult(mode="open", url="u", connections=4, threads=4, duration_s=2.0, offered_rate=rate,
                      requests=int(achieved * 2), achieved_rate=achieved, errors=errors, error_detail={},
                      latency_ms=latency, service_latency_ms=latency, generator_cpu_s=0.1,
                      sustained=achieved >= 0.95 * rate)


def closed(rate):
    return LoadResult(mode="closed", url="u", connections=4, threads=1, duration_s=2.0, offered_rate=None,
                      requests=int(rate * 2), achieved_rate=rate, errors=0, error_detail={},
                      latency_ms={"p99": 50.0}, service_latency_ms={}, generator_cpu_s=0.1, sustained=True)


def run(bisection, server):
    while (rate := bisection.next_rate()) is not None:
        bisection.record(server(rate))
    return bisection.search


def test_bisection_converges_on_the_capacity():
    # the server holds p99 under 20 ms up to 1,000 req/s and falls over beyond
    server = lambda rate: result(rate, p99=5.0) if rate <= 1000 else result(rate, p99=400.0, achieved=900)
    bisection = Bisection(slo_ms=20, steps=6)
    bisection.start(closed(2000))
    search = run(bisection, server)
    assert search.trials[0].offered_rate == 1500            # 0.75 of the closed-loop maximum
    assert 900 <= search.max_rate <= 1000
    assert search.best.offered_rate == search.max_rate
    # far misses are not re-run, but for the first rate's: 1500 twice, then 750, 1125, 937.5, ...
    assert [t.offered_rate for t in search.trials[:3]] == [1500, 1500, 750]
    assert len(search.trials) == 8


def test_a_first_rate_missed_by_a_stall_is_run_once_more():
    # a stall took the first run under 90 % of its rate; the second and third held it
    outcomes = iter([result(1500, p99=240.0, achieved=1330), result(1500, p99=6.0), result(1500, p99=7.0)])
    bisection = Bisection(slo_ms=20, steps=0)
    bisection.start(closed(2000))
    search = run(bisection, lambda rate: next(outcomes))
    assert len(search.trials) == 3 and search.max_rate == 1500


def test_a_rate_held_in_one_of_two_runs_is_decided_by_a_third():
    # a miss and a pass at the first rate: the third run decides, and a miss there is a miss
    p99s = iter([30.0, 10.0, 35.0, 5.0])
    bisection = Bisection(slo_ms=20, steps=1)
    bisection.start(closed(2000))
    search = run(bisection, lambda rate: result(rate, p99=next(p99s)))
    assert [t.offered_rate for t in search.trials] == [1500, 1500, 1500, 1275]   # a near miss: 0.85 of it
    assert search.max_rate == 1275 and search.best is search.trials[3]


def test_a_pass_at_the_first_try_is_not_run_again():
    bisection = Bisection(slo_ms=20, steps=1)
    bisection.start(closed(2000))
    search = run(bisection, lambda rate: result(rate, p99=10.0))
    assert [t.offered_rate for t in search.trials] == [1500, 1800] and search.max_rate == 1800


def test_a_close_miss_is_run_once_more():
    outcomes = iter([result(1500, p99=30.0), result(1500, p99=10.0), result(1500, p99=9.0)])   # a stall, then clean
    bisection = Bisection(slo_ms=20, steps=0)
    bisection.start(closed(2000))
    search = run(bisection, lambda rate: next(outcomes))
    assert len(search.trials) == 3 and search.max_rate == 1500
    assert search.best is search.trials[2]
    twice = iter([result(1500, p99=30.0), result(1500, p99=31.0)])
    bisection = Bisection(slo_ms=20, steps=0)
    bisection.start(closed(2000))
    assert run(bisection, lambda rate: next(twice)).max_rate == 0


def test_a_near_miss_of_the_first_rate_steps_down_instead_of_halving():
    # held up to 1,300 req/s; above it every rate is held with p99 just over the SLO
    server = lambda rate: result(rate, p99=5.0) if rate <= 1300 else result(rate, p99=30.0)
    bisection = Bisection(slo_ms=20, steps=3)
    bisection.start(closed(2000))
    search = run(bisection, server)
    # 1500 missed (twice), then 0.85 of it, then the bisection between 1275 and 1500 (near misses re-run)
    assert [t.offered_rate for t in search.trials] == [1500, 1500, 1275, 1387.5, 1387.5, 1331.25, 1331.25]
    assert search.max_rate == 1275     # halving would have stopped at 1125 (750, 1125, 1312.5 missed)


def test_only_the_first_near_miss_steps_down():
    # held up to 500 req/s only: after 1500 and 1275 missed (near), the search halves as before
    server = lambda rate: result(rate, p99=5.0) if rate <= 500 else result(rate, p99=30.0)
    bisection = Bisection(slo_ms=20, steps=3, retry_close_misses=False)
    bisection.start(closed(2000))
    search = run(bisection, server)
    assert [t.offered_rate for t in search.trials] == [1500, 1275, 637.5, 318.75]
    assert search.max_rate == 318.75


def test_a_far_miss_of_the_first_rate_still_halves():
    for far in (result(1500, p99=45.0), result(1500, p99=10.0, achieved=1200), result(1500, p99=10.0, errors=2)):
        bisection = Bisection(slo_ms=20, steps=1, retry_close_misses=False)
        bisection.start(closed(2000))
        bisection.record(far)
        assert bisection.next_rate() == 750


@pytest.mark.parametrize("server", [
    lambda rate: result(rate, p99=1.0, errors=3),                  # fast, but some answers were errors
    lambda rate: result(rate, p99=1.0, achieved=rate * 0.5),       # fast, but only half the rate went through
])
def test_errors_or_an_unheld_rate_never_count(server):
    bisection = Bisection(slo_ms=20, steps=2, retry_close_misses=False)
    bisection.start(closed(1000))
    search = run(bisection, server)
    assert search.max_rate == 0 and search.best is None and len(search.trials) == 3


def test_a_server_that_answered_nothing_is_not_searched():
    bisection = Bisection(slo_ms=20, steps=4)
    bisection.start(closed(0))
    assert bisection.next_rate() is None


def test_open_loop_connections_follow_the_rate():
    from bench.search import open_loop_connections

    assert open_loop_connections(46, 32) == 4          # never fewer than 4
    assert open_loop_connections(1_000, 32) == 10      # one per 100 req/s
    assert open_loop_connections(50_000, 32) == 32     # never more than asked
    assert open_loop_connections(1_000, 2) == 2
