"""Predictors: one small class each, one interface.

A predictor is loaded once (before the workers fork, so that they share its
pages) and then called for every request: ``predict(rows)`` takes a
C-contiguous float32 matrix (rows x ``num_feature``, NaN = missing) and returns
the model's prediction, shape (n,) or (n, k), as XGBoost's ``predict`` would
(probabilities for ``binary:logistic``). Every predictor here is safe to call
from concurrent threads and greenlets.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Predictor(Protocol):
    name: str            # for logs: which predictor answers
    num_feature: int

    def predict(self, rows: np.ndarray) -> np.ndarray: ...


def _one_output_per_row(out: np.ndarray, n_rows: int) -> np.ndarray:
    """(n,), (n, 1) or (n, 1, 1) -> (n,); (n, 1, k) or (n, k) -> (n, k)."""
    out = out.reshape(n_rows, -1)
    return out[:, 0] if out.shape[1] == 1 else out


class StockPredictor:
    """XGBoost ``inplace_predict`` on one thread: no DMatrix, no prediction cache.
    XGBoost documents ``inplace_predict`` as thread-safe for tree boosters."""

    name = "stock"

    def __init__(self, booster):
        booster.set_param({"nthread": 1})
        self.booster = booster
        self.num_feature = int(booster.num_features())

    def predict(self, rows: np.ndarray) -> np.ndarray:
        out = self.booster.inplace_predict(rows, validate_features=False)
        return _one_output_per_row(out, rows.shape[0])


class LinearPredictor:
    """XGBoost ``predict`` on a DMatrix, for gblinear models: a linear model is one dot product,
    nothing to compile, and XGBoost has no ``inplace_predict`` for it. XGBoost does not promise
    that gblinear prediction is thread-safe, so calls take turns (a worker is one process; this
    only matters for gthread workers)."""

    name = "stock (gblinear)"

    def __init__(self, booster):
        import threading

        import xgboost

        booster.set_param({"nthread": 1})
        self.booster = booster
        self.num_feature = int(booster.num_features())
        self._dmatrix = xgboost.DMatrix
        self._lock = threading.Lock()

    def predict(self, rows: np.ndarray) -> np.ndarray:
        data = self._dmatrix(rows, missing=np.nan, nthread=1)
        with self._lock:
            out = self.booster.predict(data, validate_features=False)
        return _one_output_per_row(out, rows.shape[0])


class GtilPredictor:
    """Treelite's reference interpreter (GTIL), for models XGBoost cannot load (1.x binary
    and pickles): slower than both others beyond a few rows, but exact."""

    name = "gtil"

    def __init__(self, treelite_model):
        import treelite.gtil   # only for the rare models that need it
        self._gtil = treelite.gtil
        self.model = treelite_model
        self.num_feature = int(treelite_model.num_feature)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        out = self._gtil.predict(self.model, rows, nthread=1)
        return _one_output_per_row(out, rows.shape[0])


class CompiledPredictor:
    """The TL2cgen-compiled library through ``model_core.runtime.CompiledModel``, the one
    way the project calls a library. CompiledModel is safe for concurrent callers: its
    direct entry point is reentrant (and ctypes releases the GIL during the call), and
    it serializes calls itself for plain TL2cgen libraries."""

    name = "compiled"

    def __init__(self, compiled_model):
        self.model = compiled_model
        self.num_feature = int(compiled_model.num_feature)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.model.predict(rows)

    def close(self) -> None:
        """Unload the library (a multi-model unload); no call may be in flight."""
        self.model.close()


class RouterPredictor:
    """Sends each request to the faster predictor for its number of rows: below the
    crossover measured when the model was compiled to ``small``, from it on to ``large``."""

    def __init__(self, small: Predictor, large: Predictor, crossover: int):
        if small.num_feature != large.num_feature:
            raise ValueError(f"router: {small.name} takes {small.num_feature} features, "
                             f"{large.name} {large.num_feature}")
        self.small, self.large, self.crossover = small, large, int(crossover)
        self.num_feature = small.num_feature
        self.name = f"router({small.name} below {self.crossover} rows, {large.name} from {self.crossover})"

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return (self.small if rows.shape[0] < self.crossover else self.large).predict(rows)

    def close(self) -> None:
        for side in (self.small, self.large):
            close_predictor(side)


def close_predictor(predictor: Predictor) -> None:
    """Free what a predictor holds natively, for those that hold something (a compiled
    library); the others are freed with their last reference."""
    close = getattr(predictor, "close", None)
    if close is not None:
        close()
