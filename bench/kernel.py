"""In-process timings: every way to predict, one thread each, at batch sizes 1 to 10,000.

For one model, each predictor is called on batches drawn from the sample rows, after a
warm-up, until ``min_time_s`` has passed (at least ``min_calls`` calls), and the whole
measurement is made twice (``repeats``) so that the spread shows. Predictors take turns
at each batch size, so that outside load slows them alike. Per measurement:
median and p99 seconds per call and rows per second at the median.

Predictors (all single-threaded: ``nthread=1`` where there is such a setting; the compiled
library runs on the calling thread):

* ``compiled <variant>``: ``model_core.runtime.CompiledModel`` on each compile variant;
* ``kernel, batch path``: the kernel library through ``predict_batch``, the way
  without the one-row shortcut (every batch's way; one row went this way before it);
* ``router``: the server's predictor for the deployed artifact (``serve.loading.load_model``
  with ``auto``): compiled below the crossover batch size, stock XGBoost from it on;
* ``inplace_predict``: ``Booster.inplace_predict`` (what ``serve`` uses for stock);
* ``DMatrix + predict``: a fresh ``DMatrix`` per call (a reused one would hit XGBoost's
  prediction cache) and ``Booster.predict``, as the stock container does;
* ``GTIL``: Treelite's reference interpreter, ``treelite.gtil.predict``;
* ``parse CSV (serve)`` and ``parse CSV (stock)``: the request parsing cost alone, for a
  CSV body of the batch's rows, through ``serve.codecs.decode_csv`` and through the stock
  container's parsing (``bench.baselines.stock_csv_to_dmatrix``, which includes its DMatrix).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from bench.models import DEPLOYED_VARIANT, ModelUnderTest
from bench.payloads import cycled_bodies, read_sample_rows, rows_matrix

BATCH_SIZES = (1, 10, 100, 1_000, 10_000)
# Calls cycle through different rows: a few rows repeated would let the CPU's branch
# predictor learn their paths through the trees and flatter the compiled code (8 rows
# cycled made a 1-row rtb-large call look 3x faster than the sample's 2,000 rows do).
MAX_DISTINCT_ROWS = 2_000
MIN_DISTINCT_BATCHES = 4


def distinct_batches(sample_rows: int, size: int) -> int:
    """How many different batches of ``size`` rows to cycle through."""
    return max(MIN_DISTINCT_BATCHES, min(sample_rows, MAX_DISTINCT_ROWS) // size)


@dataclass
class KernelTiming:
    model: str
    predictor: str
    batch: int
    repeat: int
    calls: int
    median_ms: float
    p99_ms: float
    rows_per_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def time_calls(fn: Callable[[int], object], *, min_time_s: float, min_calls: int = 3,
               max_calls: int = 20_000, warmup_calls: int = 3) -> np.ndarray:
    """Seconds per call of ``fn(i)`` (i = call number), after an untimed warm-up.

    The warm-up is ``warmup_calls`` calls, cut short (after the first) once it has taken
    ``min_time_s``: a one-second call is warm after one. Timed calls go on until
    ``min_time_s`` has passed and ``min_calls`` were made, or ``max_calls``.
    """
    started = time.perf_counter()
    for i in range(warmup_calls):
        fn(i)
        if time.perf_counter() - started >= min_time_s:
            break
    times = []
    started = time.perf_counter()
    i = 0
    while i < max_calls and (i < min_calls or time.perf_counter() - started < min_time_s):
        t0 = time.perf_counter_ns()
        fn(i)
        times.append(time.perf_counter_ns() - t0)
        i += 1
    return np.asarray(times, dtype=np.float64) / 1e9


def batches_of(X: np.ndarray, size: int) -> list[np.ndarray]:
    """Different C-contiguous float32 batches of ``size`` rows (see distinct_batches; rows
    repeat when the sample has fewer)."""
    count = distinct_batches(len(X), size)
    if size > len(X):
        X = np.tile(X, (size // len(X) + 1, 1))
    step = max(1, (len(X) - size) // count)
    return [np.ascontiguousarray(X[i * step: i * step + size]) for i in range(count)
            if i * step + size <= len(X)] or [np.ascontiguousarray(X[:size])]


def predictors_for(model: ModelUnderTest) -> dict[str, Callable[[np.ndarray], object]]:
    """Name -> function(rows) for every predictor of the module docstring but the parsers."""
    import treelite
    import xgboost as xgb

    from model_core.artifact import read_manifest
    from model_core.runtime import CompiledModel
    from serve.loading import load_model

    found: dict[str, Callable[[np.ndarray], object]] = {}
    for variant, folder in model.variants.items():
        manifest = read_manifest(folder)
        compiled = CompiledModel(folder / manifest.library.file)
        found[f"compiled {variant}"] = compiled.predict
        if variant == "kernel":
            found["kernel, batch path"] = compiled.predict_batch
    if DEPLOYED_VARIANT in model.variants:
        found["router"] = load_model(model.deployed, "auto").predictor.predict
    booster = xgb.Booster()
    booster.load_model(bytearray((model.stock_dir / "xgboost-model").read_bytes()))
    booster.set_param({"nthread": 1})
    found["inplace_predict"] = lambda X: booster.inplace_predict(X, validate_features=False)
    found["DMatrix + predict"] = lambda X: booster.predict(xgb.DMatrix(X, missing=np.nan), validate_features=False)
    gtil_model = treelite.frontend.from_xgboost(booster)
    found["GTIL"] = lambda X: treelite.gtil.predict(gtil_model, X, nthread=1)
    return found


def parsers_for(num_feature: int) -> dict[str, Callable[[bytes], object]]:
    """Name -> function(CSV body) for the two request parsers."""
    from bench.baselines import stock_csv_to_dmatrix
    from serve.codecs import decode_csv

    return {
        "parse CSV (serve)": lambda body: decode_csv(body, num_feature),
        "parse CSV (stock)": lambda body: stock_csv_to_dmatrix(body.strip().decode("utf-8")),
    }


def run_kernel(model: ModelUnderTest, *, batch_sizes=BATCH_SIZES, repeats: int = 2, min_time_s: float = 0.25,
               progress: Callable[[str], None] = print) -> list[KernelTiming]:
    """Time every predictor and parser of ``model`` at ``batch_sizes``; returns one KernelTiming per
    (predictor, batch, repeat)."""
    predictors = predictors_for(model)
    lines = read_sample_rows(model.sample_csv)
    num_feature = len(lines[0].split(","))
    X = rows_matrix(lines, num_feature, model.sample_csv)
    calls: dict[str, Callable[[int, int], Callable[[int], object]]] = {}
    for name, predict in predictors.items():
        def make(size, predict=predict):
            data = batches_of(X, size)
            return lambda i: predict(data[i % len(data)])
        calls[name] = make
    for name, parse in parsers_for(num_feature).items():
        def make(size, parse=parse):
            data = cycled_bodies(lines, size, distinct_batches(len(lines), size))
            return lambda i: parse(data[i % len(data)])
        calls[name] = make

    # Batch size by batch size, each repeat going through every predictor in turn: a burst
    # of outside load then slows all predictors of one size alike, and ratios stay fair.
    timings = []
    for size in batch_sizes:
        fns = {name: make(size) for name, make in calls.items()}
        for repeat in range(1, repeats + 1):
            for name, fn in fns.items():
                seconds = time_calls(fn, min_time_s=min_time_s)
                median = float(np.median(seconds))
                timings.append(KernelTiming(model=model.name, predictor=name, batch=size, repeat=repeat,
                                            calls=len(seconds), median_ms=median * 1e3,
                                            p99_ms=float(np.percentile(seconds, 99, method="inverted_cdf")) * 1e3,
                                            rows_per_s=size / median))
        best = {name: min(t.median_ms for t in timings if t.predictor == name and t.batch == size) for name in fns}
        progress(f"  {model.name}, {size:,} row(s): " + ", ".join(f"{name} {ms:.3f}" for name, ms in best.items())
                 + " ms")
    return timings

