"""What a model is: the one description of a source model that every part reads.

Objective, classes, features, trees, base score, names and split thresholds
are worked out here, from XGBoost's JSON model document, and nowhere else:
the compiler writes them into the manifest (``artifact.ModelInfo``), the
verification builds its rows from the thresholds, and the server answers with
the objective and classes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

# Treelite's task type and postprocessor -> the XGBoost objective they come from (for models
# only Treelite reads: served by GTIL).
_OBJECTIVE_OF_TREELITE = {
    ("kBinaryClf", "sigmoid"): "binary:logistic",
    ("kBinaryClf", "identity"): "binary:logitraw",
    ("kMultiClf", "softmax"): "multi:softprob",
    ("kMultiClf", "identity_multiclass"): "multi:softmax",
    ("kRegressor", "identity"): "reg:squarederror",
    ("kRegressor", "exponential"): "reg:gamma",
}


@dataclass(frozen=True)
class ModelDescription:
    """A model's shape and meaning. ``num_class`` is 1 for binary classification and
    regression; ``booster`` is gbtree, dart or gblinear; ``document`` is XGBoost's JSON
    model document it was read from (None when Treelite described the model)."""

    booster: str
    objective: str
    num_feature: int
    num_class: int
    num_tree: int
    base_score: list[float] | None = None
    feature_names: list[str] | None = None
    document: dict | None = field(default=None, repr=False, compare=False)

    @property
    def is_tree_ensemble(self) -> bool:
        return self.booster in ("gbtree", "dart")

    @classmethod
    def from_document(cls, doc: dict) -> ModelDescription:
        """From XGBoost's JSON model document (``Booster.save_raw("json")``, parsed)."""
        learner = doc["learner"]
        params = learner["learner_model_param"]
        gbm = learner["gradient_booster"]
        return cls(booster=gbm["name"], objective=learner["objective"]["name"],
                   num_feature=int(params.get("num_feature", "0") or 0),
                   num_class=max(1, int(params.get("num_class", "0") or 0)),
                   num_tree=len(_trees(gbm)), base_score=_base_score(params.get("base_score")),
                   feature_names=list(learner.get("feature_names") or []) or None, document=doc)

    @classmethod
    def from_booster(cls, booster) -> ModelDescription:
        """From a loaded ``xgboost.Booster``."""
        return cls.from_document(json.loads(bytes(booster.save_raw("json"))))

    @classmethod
    def from_treelite(cls, model) -> ModelDescription:
        """From a ``treelite.Model``, as far as its header tells (no thresholds)."""
        header = json.loads(model.dump_as_json(pretty_print=False))
        trees = header.pop("trees", [])
        objective = _OBJECTIVE_OF_TREELITE.get((header.get("task_type"), header.get("postprocessor")),
                                               "unknown")
        return cls(booster="gbtree", objective=objective, num_feature=int(header.get("num_feature", 0)),
                   num_class=max(max(header.get("num_class") or [1]), 1), num_tree=len(trees))

    @cached_property
    def split_thresholds(self) -> dict[int, np.ndarray]:
        """``{feature index: sorted unique float32 thresholds}`` of the numerical splits."""
        if self.document is None:
            raise ValueError("split thresholds need XGBoost's model document")
        found: dict[int, list[np.ndarray]] = {}
        for tree in _trees(self.document["learner"]["gradient_booster"]):
            left = np.asarray(tree["left_children"])
            features = np.asarray(tree["split_indices"])
            values = np.asarray(tree["split_conditions"], dtype=np.float32)
            split_type = np.asarray(tree.get("split_type") or [0] * len(left))
            is_split = (left != -1) & (split_type == 0)
            for feature in np.unique(features[is_split]):
                found.setdefault(int(feature), []).append(values[is_split & (features == feature)])
        return {f: np.unique(np.concatenate(v)) for f, v in found.items()}


def _trees(gbm: dict) -> list[dict]:
    if gbm["name"] == "gblinear":
        return []
    return (gbm.get("model") or gbm["gbtree"]["model"])["trees"]   # dart nests its gbtree


def _base_score(value) -> list[float] | None:
    if value is None:
        return None
    return [float(v) for v in str(value).strip("[]").split(",") if v.strip()]
