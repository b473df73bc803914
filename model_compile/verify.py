"""Proof that a compiled library predicts what XGBoost predicts, and where it stops being faster.

* :func:`threshold_rows`: rows built around the model's own split thresholds
  (exactly on, one float32 step either side, in between), with missing values
  mixed in: where a compiler gets comparisons or default directions wrong.
* :func:`compare`: the largest absolute difference, and whether every output is
  within its tolerance (:func:`relative_tolerance` says why it grows with the output).
* :func:`measure_crossover`: the batch size from which the stock XGBoost
  predictor (one thread) beats the compiled library on this machine.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

DEFAULT_TOLERANCE = 1e-5          # the absolute floor
FLOAT32_EPS = float(np.finfo(np.float32).eps)   # 2**-23
TOLERANCE_RULE = ("each output passes when |candidate - reference| <= tolerance + relative_tolerance "
                  "* |reference|; relative_tolerance = (trees / classes) * 2**-23 unless given")
DEFAULT_GENERATED_ROWS = 2000
MISSING_SHARE = 0.1
# Up to 16k rows: a 6 MB request of a small model holds that many, and XGBoost's predictor
# can overtake the compiled code only in the thousands of rows.
CROSSOVER_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
CROSSOVER_BUDGET_SECONDS = 4.0


class VerificationError(RuntimeError):
    """The compiled model disagrees with the reference; the message names the worst row."""


# --- rows to verify on -------------------------------------------------------

def threshold_rows(thresholds: dict[int, np.ndarray], num_feature: int, n_rows: int,
                   seed: int = 0) -> np.ndarray:
    """``n_rows`` float32 rows whose values sit on, just below, just above and
    between the split thresholds, about 10 % missing (NaN).

    Features the model never splits on get standard-normal values.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, num_feature)).astype(np.float32)
    for feature, values in thresholds.items():
        if feature >= num_feature or values.size == 0:
            continue
        picked = values[rng.integers(0, values.size, n_rows)]
        kind = rng.random(n_rows)
        column = picked.copy()
        below, above = kind < 0.25, (kind >= 0.25) & (kind < 0.5)
        column[below] = np.nextafter(picked[below], np.float32(-np.inf))
        column[above] = np.nextafter(picked[above], np.float32(np.inf))
        # A quarter anywhere across (and a little beyond) the thresholds' range.
        spread = kind >= 0.75
        low, high = float(values[0]), float(values[-1])
        margin = max(1.0, 0.1 * (high - low))
        column[spread] = rng.uniform(low - margin, high + margin, int(spread.sum())).astype(np.float32)
        X[:, feature] = column
    X[rng.random(X.shape) < MISSING_SHARE] = np.nan
    return X


# --- reference predictions ---------------------------------------------------

def _softmax(margin: np.ndarray) -> np.ndarray:
    shifted = margin - margin.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def xgboost_predict(booster, X: np.ndarray, objective: str, margin: bool = False) -> np.ndarray:
    """XGBoost's output as a (n, outputs) float64 array in the compiled library's terms.

    ``multi:softmax`` is compared as class probabilities (the compiled library
    returns probabilities; XGBoost's argmax of them is the predicted label).
    """
    if margin or objective == "multi:softmax":
        out = booster.inplace_predict(X, predict_type="margin", validate_features=False)
        out = np.asarray(out, dtype=np.float64).reshape(X.shape[0], -1)
        return out if margin else _softmax(out)
    out = booster.inplace_predict(X, validate_features=False)
    return np.asarray(out, dtype=np.float64).reshape(X.shape[0], -1)


def gtil_predict(tl_model, X: np.ndarray, margin: bool = False) -> np.ndarray:
    """Treelite GTIL's output as a (n, outputs) float64 array."""
    import treelite

    out = treelite.gtil.predict(tl_model, np.ascontiguousarray(X, dtype=np.float32), nthread=1,
                                pred_margin=margin)
    return np.asarray(out, dtype=np.float64).reshape(X.shape[0], -1)


# --- comparison --------------------------------------------------------------

def relative_tolerance(num_tree: int, num_class: int = 1) -> float:
    """How much of ``|reference|`` an output may differ by, on top of the absolute floor.

    An output sums one leaf per tree in float32; XGBoost, GTIL and the compiled
    library add them in different orders (and quantized or not), and each
    addition may round by half a float32 step of the running sum. Over the T
    trees of one output that is at most about T x eps32 x |sum|: a few 1e-6 for
    a model of 30 trees whose outputs are near 20, far below what a wrong
    comparison or a threshold one float step off changes (a whole leaf). The
    bound is stated on the output, where sigmoid and softmax only shrink a
    margin's error; for log-link objectives it covers margins up to about 1.
    """
    return max(1, int(num_tree) // max(1, int(num_class))) * FLOAT32_EPS


@dataclass
class Comparison:
    """How far ``candidate`` is from ``reference`` over ``rows`` rows. Each output may differ by
    ``tolerance + relative_tolerance * |reference|`` (``worst_allowed`` at the worst row)."""

    candidate: str
    reference: str
    rows: int
    max_abs_diff: float
    tolerance: float
    worst_row: int
    worst_candidate: list[float]
    worst_reference: list[float]
    margin_max_abs_diff: float | None = None
    row_labels: list[str] = field(default_factory=list)
    relative_tolerance: float = 0.0
    worst_allowed: float = 0.0
    within: bool = True

    @property
    def passed(self) -> bool:
        return self.within

    def describe_worst(self, X: np.ndarray | None = None) -> str:
        row = f"row {self.worst_row}"
        if self.row_labels:
            row += f" ({self.row_labels[self.worst_row]})"
        allowed = (f"tolerance {self.tolerance:g} + {self.relative_tolerance:.3g} x |{self.reference}| = "
                   f"{self.worst_allowed:.3g} there" if self.relative_tolerance else f"tolerance {self.tolerance:g}")
        difference = float(np.max(np.abs(np.subtract(self.worst_candidate, self.worst_reference)))) \
            if self.worst_candidate else self.max_abs_diff
        text = (f"{self.candidate} differs from {self.reference} by {difference:.3g} "
                f"({allowed}) at {row}: {self.candidate} "
                f"{_fmt(self.worst_candidate)}, {self.reference} {_fmt(self.worst_reference)}")
        if X is not None:
            values = ",".join("" if np.isnan(v) else f"{v:.9g}" for v in X[self.worst_row][:20])
            text += f"; input [{values}{',...' if X.shape[1] > 20 else ''}]"
        return text


def _fmt(values: list[float]) -> str:
    return values and (f"{values[0]:.9g}" if len(values) == 1
                       else "[" + ", ".join(f"{v:.9g}" for v in values) + "]")


def compare(candidate: np.ndarray, reference: np.ndarray, *, candidate_name: str,
            reference_name: str, tolerance: float = DEFAULT_TOLERANCE,
            relative: float = 0.0) -> Comparison:
    """Compare two (n, outputs) predictions: each output may differ by
    ``tolerance + relative * |reference|``. The worst row is the one furthest past
    (or closest to) what it is allowed; ``max_abs_diff`` is the largest difference.

    A NaN on one side and not the other counts as an infinite difference.
    """
    cand = np.asarray(candidate, dtype=np.float64).reshape(reference.shape[0], -1)
    ref = np.asarray(reference, dtype=np.float64).reshape(reference.shape[0], -1)
    if cand.shape != ref.shape:
        raise VerificationError(f"{candidate_name} gives {cand.shape[1]} outputs per row, "
                                f"{reference_name} {ref.shape[1]}")
    diff = np.abs(cand - ref)
    both_nan = np.isnan(cand) & np.isnan(ref)
    diff = np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
    allowed = tolerance + relative * np.nan_to_num(np.abs(ref), nan=0.0, posinf=0.0)
    if not diff.size:
        return Comparison(candidate=candidate_name, reference=reference_name, rows=int(ref.shape[0]),
                          max_abs_diff=0.0, tolerance=tolerance, worst_row=0, worst_candidate=[],
                          worst_reference=[], relative_tolerance=relative)
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where(diff == 0, 0.0, diff / allowed)
    flat = int(np.argmax(excess))
    worst, column = divmod(flat, diff.shape[1])
    return Comparison(candidate=candidate_name, reference=reference_name, rows=int(ref.shape[0]),
                      max_abs_diff=float(diff.max()), tolerance=tolerance, worst_row=int(worst),
                      worst_candidate=cand[worst].tolist(), worst_reference=ref[worst].tolist(),
                      relative_tolerance=relative, worst_allowed=float(allowed[worst, column]),
                      within=bool((diff <= allowed).all()))


# --- crossover ---------------------------------------------------------------

def median_seconds(fn, pool: np.ndarray, n: int, budget: float, min_runs: int = 3,
                    max_runs: int = 200) -> float:
    """Median seconds of ``fn(batch)`` over successive ``n``-row windows of ``pool``.

    Each call gets different rows, as live traffic does: repeating one batch lets
    the CPU's branch predictor learn its paths and flatters small batches ~3x.
    """
    windows = max(1, pool.shape[0] // n)
    batches = [pool[i * n:(i + 1) * n] for i in range(min(windows, max_runs + 1))]
    fn(batches[-1])  # warm up: first-call allocations, lazy symbol binding
    times = []
    deadline = time.perf_counter() + budget
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() < deadline):
        X = batches[len(times) % len(batches)]
        started = time.perf_counter()
        fn(X)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


@dataclass
class Crossover:
    batch_size: int | None            # None: the compiled library won at every size tried
    timings: list[dict]               # [{"rows", "compiled_ms", "xgboost_ms"}]


def measure_crossover(compiled, booster, rows: np.ndarray, *,
                      sizes: tuple[int, ...] = CROSSOVER_SIZES,
                      budget_seconds: float = CROSSOVER_BUDGET_SECONDS) -> Crossover:
    """Median time per call of ``compiled.predict`` and ``booster.inplace_predict``
    (one thread) at growing batch sizes, drawn from ``rows``.

    The crossover is the smallest size from which XGBoost was faster at every
    larger size measured; measuring stops after XGBoost wins twice in a row.
    """
    booster.set_param({"nthread": 1})
    pool = np.ascontiguousarray(rows, dtype=np.float32)
    if pool.shape[0] < max(sizes):
        pool = np.tile(pool, (int(np.ceil(max(sizes) / max(1, pool.shape[0]))), 1))
    per_size = budget_seconds / (2 * len(sizes))
    timings: list[dict] = []
    wins = 0
    for n in sizes:
        compiled_s = median_seconds(compiled.predict, pool, n, per_size)
        xgb_s = median_seconds(lambda X: booster.inplace_predict(X, validate_features=False),
                                pool, n, per_size)
        timings.append({"rows": n, "compiled_ms": round(compiled_s * 1e3, 4),
                        "xgboost_ms": round(xgb_s * 1e3, 4)})
        wins = wins + 1 if xgb_s < compiled_s else 0
        if wins >= 2:
            break
    crossover = None
    for timing in reversed(timings):
        if timing["xgboost_ms"] < timing["compiled_ms"]:
            crossover = timing["rows"]
        else:
            break
    return Crossover(batch_size=crossover, timings=timings)
