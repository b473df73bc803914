"""Selectable outputs: what a prediction becomes in the response.

Without ``SAGEMAKER_INFERENCE_OUTPUT`` the response carries the model's
prediction (``score``: a probability for ``binary:logistic``), as the stock
SageMaker XGBoost container returns it. With it, each row carries the named
outputs, with the stock container's names and meanings, except that
``predicted_label`` of a binary classifier uses a configurable decision
threshold (a bid filter tunes it, often far below 0.5) instead of a fixed 0.5.

Keys that do not fit the model's objective fail the start, instead of
answering NaN on every request as the stock container does.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

DEFAULT_KEY = "score"
CLASSIFICATION_KEYS = ("predicted_label", "labels", "probability", "probabilities", "raw_score", "raw_scores")
REGRESSION_KEYS = ("predicted_score",)
ALL_KEYS = CLASSIFICATION_KEYS + REGRESSION_KEYS

# The stock container's table of which outputs each objective has.
_KEYS_BY_OBJECTIVE = {
    "binary:logistic": CLASSIFICATION_KEYS,
    "binary:logitraw": ("predicted_label", "labels", "raw_score", "raw_scores"),
    "binary:hinge": ("predicted_label", "labels", "raw_score", "raw_scores"),
    "multi:softmax": ("predicted_label", "labels", "raw_score", "raw_scores"),
    "multi:softprob": CLASSIFICATION_KEYS,
}
_REGRESSION_PREFIXES = ("reg:", "count:", "survival:")


class OutputError(ValueError):
    """Selected outputs that the model cannot give; the message says which and why."""


def keys_for_objective(objective: str) -> tuple[str, ...]:
    """The selectable outputs an objective has (empty for ranking and unknown objectives)."""
    if objective in _KEYS_BY_OBJECTIVE:
        return _KEYS_BY_OBJECTIVE[objective]
    if objective.startswith(_REGRESSION_PREFIXES):
        return REGRESSION_KEYS
    return ()


class OutputSelector:
    """Turns a predictor's output into the response's named per-row values.

    Built once at start from the selected keys (None: the default ``score``), the model's
    objective and number of classes, and the decision threshold. Calling it with the
    predictions ((n,) or (n, k) float32) returns {name: array}: 1-D arrays hold one value
    per row, 2-D arrays one list per row. Raises OutputError at construction for keys
    that are unknown or do not fit the objective.
    """

    def __init__(self, keys: tuple[str, ...] | None, objective: str, num_class: int, threshold: float = 0.5):
        self.selected = keys is not None
        self.keys = keys if keys is not None else (DEFAULT_KEY,)
        self.objective = objective
        self.num_class = max(int(num_class), 1)
        self.threshold = float(threshold)
        if self.selected:
            unknown = [k for k in self.keys if k not in ALL_KEYS]
            if unknown:
                raise OutputError(f"SAGEMAKER_INFERENCE_OUTPUT names unknown output(s) {', '.join(unknown)}; "
                                  f"known: {', '.join(ALL_KEYS)}")
            allowed = keys_for_objective(objective)
            unfit = [k for k in self.keys if k not in allowed]
            if unfit:
                raise OutputError(f"SAGEMAKER_INFERENCE_OUTPUT: output(s) {', '.join(unfit)} do not fit objective "
                                  f"{objective!r}; it has: {', '.join(allowed) or 'none'}")
        self._makers: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
            (key, self._maker(key)) for key in self.keys]

    def __call__(self, predictions: np.ndarray) -> dict[str, np.ndarray]:
        return {key: make(predictions) for key, make in self._makers}

    def _maker(self, key: str) -> Callable[[np.ndarray], np.ndarray]:
        objective = self.objective
        if key == DEFAULT_KEY or key == "predicted_score":
            return lambda p: p
        if key == "labels":
            classes = np.arange(2 if objective.startswith("binary:") else self.num_class, dtype=np.int64)
            return lambda p: np.broadcast_to(classes, (p.shape[0], classes.size))
        if key == "predicted_label":
            return self._label_maker()
        if objective.startswith("multi:"):
            if key in ("probability", "raw_score"):
                return lambda p: p.max(axis=1) if p.ndim == 2 else p
            if key in ("probabilities", "raw_scores") and objective == "multi:softprob":
                return lambda p: p
        # Binary objectives, and the stock container's two-column "scores" of multi:softmax.
        if key in ("probability", "raw_score"):
            return lambda p: p
        return lambda p: np.column_stack((1.0 - p, p)).astype(np.float32)

    def _label_maker(self) -> Callable[[np.ndarray], np.ndarray]:
        objective, threshold = self.objective, self.threshold
        if objective == "binary:logistic":
            return lambda p: (p > threshold).astype(np.int64)
        if objective == "binary:logitraw":
            # The same decision on the margin scale: p > t  <=>  margin > logit(t).
            margin = math.log(threshold / (1.0 - threshold)) if 0.0 < threshold < 1.0 else (
                -math.inf if threshold <= 0.0 else math.inf)
            return lambda p: (p > margin).astype(np.int64)
        if objective == "multi:softprob":
            return lambda p: p.argmax(axis=1).astype(np.int64)
        # binary:hinge gives 0/1 and multi:softmax the class index already (a predictor that
        # returns per-class scores for multi:softmax gets its argmax).
        return lambda p: (p.argmax(axis=1) if p.ndim == 2 else p).astype(np.int64)
