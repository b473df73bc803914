"""In-process timings: every predictor gives the same answers, and the timing loop is sound."""
from __future__ import annotations

import time

import numpy as np
import pytest

from bench.kernel import batches_of, distinct_batches, predictors_for, run_kernel, time_calls
from bench.payloads import cycled_bodies, read_sample_rows, rows_matrix


def test_single_row_batches_cycle_through_every_sample_row():
    X = np.arange(2000 * 3, dtype=np.float32).reshape(2000, 3)
    singles = batches_of(X, 1)
    assert len({b.tobytes() for b in singles}) == 2000        # no few rows for the branch predictor to learn
    big = batches_of(X, 10_000)
    assert all(b.shape == (10_000, 3) and b.flags.c_contiguous for b in big)
    bodies = cycled_bodies([f"{i},1" for i in range(2000)], 10, distinct_batches(2000, 10))
    assert len(set(bodies)) == len(bodies) == 200 and bodies[0].count(b"\n") == 10


def test_time_calls_measures_each_call_after_warmup():
    calls = []
    seconds = time_calls(lambda i: (calls.append(i), time.sleep(0.002)), min_time_s=0.01, min_calls=3,
                         warmup_calls=2)
    assert len(calls) == len(seconds) + 2 and len(seconds) >= 3
    assert np.all(seconds >= 0.002) and np.all(seconds < 0.1)
    calls.clear()          # a slow call: one warm-up call is enough
    seconds = time_calls(lambda i: (calls.append(i), time.sleep(0.02)), min_time_s=0.01, min_calls=3)
    assert len(calls) == len(seconds) + 1 == 4


def test_every_predictor_predicts_the_same(deployed_model):
    model = deployed_model("rtb-small")
    X = rows_matrix(read_sample_rows(model.sample_csv), 7)[:200]
    predictors = predictors_for(model)
    assert {"compiled quantized", "router", "inplace_predict", "DMatrix + predict", "GTIL"} <= set(predictors)
    reference = np.asarray(predictors["inplace_predict"](X)).reshape(-1)
    for name, predict in predictors.items():
        np.testing.assert_allclose(np.asarray(predict(X)).reshape(-1), reference, atol=1e-5, err_msg=name)


def test_run_kernel_times_every_predictor_and_parser_twice(deployed_model):
    model = deployed_model("rtb-small")
    timings = run_kernel(model, batch_sizes=(1, 10), repeats=2, min_time_s=0.005, progress=lambda line: None)
    names = {t.predictor for t in timings}
    assert {"router", "GTIL", "parse CSV (serve)", "parse CSV (stock)"} <= names
    assert len(timings) == len(names) * 2 * 2
    for t in timings:
        assert t.calls >= 3 and 0 < t.median_ms <= t.p99_ms
        assert t.rows_per_s == pytest.approx(t.batch / (t.median_ms / 1e3))
