"""Train the sample bid-filter models and write them as SageMaker writes them.

Each model lands in ``<out>/<name>/``:

* ``model.tar.gz`` holding ``xgboost-model`` (UBJSON, what SageMaker's built-in
  XGBoost 1.7+ container saves), the artifact a user points the compiler at;
* ``sample.csv``: held-out request rows, no header, no label, empty field = missing;
* ``holdout.csv``: the same rows with the label first (``label_size=1`` style);
* ``metadata.json``: how it was made, its held-out AUC and sizes.

Built models are cached: a model whose metadata matches the recipe is not
trained again.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from sample_models.data import Dataset, auc, make_rtb_large, make_rtb_small

log = logging.getLogger(__name__)

# Bump when the data or training changes, so cached models are rebuilt.
RECIPE_VERSION = 1
DEFAULT_OUT = Path("artifacts/sample-models")
SAMPLE_ROWS = 2000


@dataclass(frozen=True)
class Recipe:
    name: str
    n_rows: int
    n_trees: int
    max_depth: int
    learning_rate: float
    # SageMaker's built-in algorithm trains from CSV and knows no names; models
    # trained with the Python API usually carry them. One of each.
    keep_feature_names: bool
    seed: int = 20261128


RECIPES: dict[str, tuple[Recipe, Callable[[int, int], Dataset]]] = {
    "rtb-small": (Recipe("rtb-small", 100_000, 50, 5, 0.3, False), make_rtb_small),
    "rtb-large": (Recipe("rtb-large", 200_000, 300, 8, 0.1, True), make_rtb_large),
}


def format_csv_rows(X: np.ndarray, labels: np.ndarray | None = None) -> str:
    """CSV text as a client sends it: the shortest text that reads back to the
    same float32, NaN as an empty field."""
    def field(value: np.float32) -> str:
        return "" if np.isnan(value) else np.format_float_positional(value, trim="-")

    lines = []
    for i, row in enumerate(X.astype(np.float32)):
        fields = [field(v) for v in row]
        if labels is not None:
            fields.insert(0, str(int(labels[i])))
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


def train(recipe: Recipe, data: Dataset):
    import xgboost as xgb  # heavy import, only when a model is really trained

    n_train = int(len(data.y) * 0.8)
    names = list(data.feature_names)
    dtrain = xgb.DMatrix(data.X[:n_train], label=data.y[:n_train], missing=np.nan, feature_names=names)
    params = {
        "objective": "binary:logistic",
        "eval_metric": "auc",
        "max_depth": recipe.max_depth,
        "eta": recipe.learning_rate,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "min_child_weight": 5,
        "tree_method": "hist",
        "seed": recipe.seed,
        "nthread": 2,
    }
    booster = xgb.train(params, dtrain, num_boost_round=recipe.n_trees)
    if not recipe.keep_feature_names:
        booster.feature_names = None
    X_test, y_test = data.X[n_train:], data.y[n_train:]
    return booster, X_test, y_test


def write_model_tar(raw_model: bytes, path: Path) -> None:
    """A SageMaker training output: a tarball with one member, ``xgboost-model``."""
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = len(raw_model)
        info.mtime = 0
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(raw_model))
    tmp.replace(path)


def build(name: str, out: Path = DEFAULT_OUT, force: bool = False) -> dict:
    """Build one sample model (or reuse the cached one) and return its metadata."""
    recipe, make_data = RECIPES[name]
    folder = out / name
    meta_path = folder / "metadata.json"
    wanted = {"recipe_version": RECIPE_VERSION, "recipe": asdict(recipe)}
    if not force and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in wanted} == wanted and (folder / "model.tar.gz").exists():
            meta["cached"] = True
            return meta

    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = make_data(recipe.n_rows, recipe.seed)
    booster, X_test, y_test = train(recipe, data)
    import xgboost as xgb

    score = booster.inplace_predict(X_test)
    raw = bytes(booster.save_raw("ubj"))
    write_model_tar(raw, folder / "model.tar.gz")
    (folder / "sample.csv").write_text(format_csv_rows(X_test[:SAMPLE_ROWS]))
    (folder / "holdout.csv").write_text(format_csv_rows(X_test[:SAMPLE_ROWS], y_test[:SAMPLE_ROWS]))
    meta = {
        **wanted,
        "name": name,
        "objective": "binary:logistic",
        "n_features": int(data.X.shape[1]),
        "feature_names": list(data.feature_names),
        "n_train_rows": int(len(data.y) - len(y_test)),
        "n_test_rows": int(len(y_test)),
        "missing_rate": round(data.missing_rate, 4),
        "positive_rate": round(data.positive_rate, 4),
        "holdout_auc": round(auc(y_test, score), 4),
        "model_bytes": len(raw),
        "tar_bytes": (folder / "model.tar.gz").stat().st_size,
        "xgboost_version": xgb.__version__,
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    meta["cached"] = False
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sample_models",
                                     description="Build the synthetic bid-filter sample models.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"models to build, of {', '.join(RECIPES)} (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(RECIPES)
    if unknown:
        parser.error(f"unknown model {', '.join(sorted(unknown))}; choose from {', '.join(RECIPES)}")
    for name in args.names or list(RECIPES):
        print(f"building {name} ...", flush=True)
        meta = build(name, args.out, args.force)
        print(f"  {name}: {meta['n_features']} features, {meta['recipe']['n_trees']} trees of depth "
              f"{meta['recipe']['max_depth']}, held-out AUC {meta['holdout_auc']:.4f}, "
              f"positives {meta['positive_rate']:.1%}, missing {meta['missing_rate']:.1%}, "
              f"model {meta['model_bytes'] / 1e6:.2f} MB (tar.gz {meta['tar_bytes'] / 1e6:.2f} MB)"
              + (", cached" if meta["cached"] else f", built in {meta['build_seconds']} s"))
        print(f"  -> {args.out / name / 'model.tar.gz'}")
    return 0
