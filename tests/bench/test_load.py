"""The load generator's statistics on known input: servers of fixed, known delay.

Runs are a few seconds each against bench.trivial_server on loopback. Bounds are
loose where the machine's noise enters (scheduling on 2 shared cores) and tight where
arithmetic decides (Little's law, queue growth past capacity).
"""
from __future__ import annotations

import math

import pytest

from bench.load import (LoadError, latency_summary, open_loop_rates, run_load, trivial_server,
                        wrk_binary)

BODIES = [b"1,2,3\n", b"4,,6\n"]


def test_latency_summary_is_nearest_rank_in_ms():
    summary = latency_summary(range(1, 1001))          # 1..1000 us
    assert summary["p50"] == pytest.approx(0.500)
    assert summary["p90"] == pytest.approx(0.900)
    assert summary["p99"] == pytest.approx(0.990)
    assert summary["p99.9"] == pytest.approx(0.999)
    assert summary["mean"] == pytest.approx(0.5005)
    assert summary["max"] == pytest.approx(1.000)
    assert all(math.isnan(v) for v in latency_summary([]).values())


def test_open_loop_rates_see_a_backlog_that_no_sample_shows():
    keeping_up = {"received": 100, "sent": 100, "t0_us": 0.0, "interval_us": 10_000.0,
                  "last_done_us": 99 * 10_000.0 + 2_000.0}
    rate, share = open_loop_rates([keeping_up, dict(keeping_up)])
    assert rate == pytest.approx(200, rel=0.01)        # two threads at 100/s each
    assert share == pytest.approx(1.0)
    # same 100 answers, but spread over twice the time: half the schedule never went out
    behind = dict(keeping_up, last_done_us=199 * 10_000.0)
    rate, share = open_loop_rates([behind])
    assert rate == pytest.approx(50, rel=0.01)
    assert share == pytest.approx(0.5)


def test_closed_loop_follows_littles_law_on_a_fixed_delay_server():
    # 10 connections, 10 ms each, unlimited server concurrency: at most 1000 req/s
    with trivial_server(delay_ms=10) as url:
        result = run_load(url, BODIES, connections=10, duration_s=2, warmup_s=0)
    assert result.mode == "closed" and result.errors == 0
    assert 10.0 <= result.latency_ms["p50"] <= 14.0
    assert result.latency_ms["p99"] >= result.latency_ms["p50"]
    assert 600 <= result.achieved_rate <= 1010
    assert result.generator_cpu_s > 0


def test_open_loop_below_capacity_holds_its_rate():
    # one request at a time, 10 ms each: capacity 100/s; offer 50/s
    with trivial_server(delay_ms=10, serial=True) as url:
        result = run_load(url, BODIES, rate=50, connections=4, duration_s=2, warmup_s=0)
    assert result.mode == "open" and result.sustained and result.errors == 0
    assert result.achieved_rate == pytest.approx(50, rel=0.1)
    assert 10.0 <= result.latency_ms["p50"] <= 14.0
    assert result.meets(slo_ms=500)          # generous: a stall of this shared machine lands in a p99


def test_open_loop_past_capacity_counts_queueing_from_the_intended_time():
    # offer 150/s to a 100/s server for 2 s: the queue grows ~50 requests/s, so late
    # requests wait hundreds of ms. From the actual send, latency stays near
    # connections x 10 ms: a closed-loop view would hide the queue.
    with trivial_server(delay_ms=10, serial=True) as url:
        result = run_load(url, BODIES, rate=150, connections=4, duration_s=2, warmup_s=0)
    assert not result.sustained
    assert result.achieved_rate <= 110
    assert result.latency_ms["p99"] >= 200
    assert result.service_latency_ms["p99"] <= 150      # 4 connections x 10 ms, plus stalls of a shared machine
    assert result.latency_ms["p99"] >= 3 * result.service_latency_ms["p99"]
    assert not result.meets(slo_ms=20)


@pytest.mark.parametrize("rate", [None, 200])
def test_error_statuses_are_counted(rate):
    with trivial_server(status=503) as url:
        result = run_load(url, BODIES, rate=rate, connections=2, duration_s=1, warmup_s=0)
    assert result.requests > 0
    assert result.errors == result.requests
    assert not result.meets(slo_ms=1000)


def test_missing_wrk_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LoadError, match="make tools"):
        wrk_binary()
