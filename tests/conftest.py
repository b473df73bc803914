"""Fixtures shared by every test package."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sample_models.build import DEFAULT_OUT, build

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def sample_model_dir():
    """Returns a function name -> folder of a built sample model.

    Models are built once into the repo's git-ignored cache and reused across
    runs and sessions (rtb-large takes seconds to train, not minutes).
    """
    def get(name: str) -> Path:
        build(name, REPO_ROOT / DEFAULT_OUT)
        return REPO_ROOT / DEFAULT_OUT / name

    return get


@pytest.fixture(scope="session")
def bare_model_dir(sample_model_dir, tmp_path_factory):
    """Returns name -> a folder as SageMaker extracts a training job's model.tar.gz (xgboost-model)."""
    from model_core.artifact import safe_extract

    folders: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in folders:
            folder = tmp_path_factory.mktemp(f"bare-{name}")
            safe_extract(sample_model_dir(name) / "model.tar.gz", folder)
            folders[name] = folder
        return folders[name]

    return get

def train_small(objective: str, *, n_trees: int = 8, depth: int = 4, base_score: float | None = None,
                seed: int = 0, n_features: int = 6, feature_names: bool = False, booster: str = "gbtree"):
    """A small booster for ``objective`` on synthetic data with missing values; returns (booster, X)."""
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    n = 600
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    signal = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 2])
    params = {"objective": objective, "max_depth": depth, "eta": 0.3, "seed": seed, "nthread": 1,
              "booster": booster}
    if booster == "dart":
        params["rate_drop"] = 0.2
    if base_score is not None:
        params["base_score"] = base_score
    if objective.startswith("multi:"):
        params["num_class"] = 3
        y = np.digitize(signal, [-0.5, 0.5])
    elif objective.startswith(("binary:", "reg:logistic")):
        y = (signal > 0).astype(np.float32)
    elif objective in ("count:poisson", "reg:gamma", "reg:tweedie"):
        y = rng.poisson(np.exp(0.5 * np.clip(signal, -2, 2))).astype(np.float32) + (
            0.5 if objective == "reg:gamma" else 0.0)
    elif objective == "rank:map":
        y = (signal > 0).astype(np.float32)
    elif objective.startswith("rank:"):
        y = np.clip(np.round(signal + 1), 0, 3)
    elif objective == "reg:squaredlogerror":
        y = np.exp(np.clip(signal, -2, 2))
    elif objective == "survival:cox":
        y = (rng.exponential(1.0, n) + 0.1) * np.where(rng.random(n) < 0.8, 1, -1)
    else:
        y = signal
    names = [f"f{i}" for i in range(n_features)] if feature_names else None
    dtrain = xgb.DMatrix(X, label=y, feature_names=names)
    if objective.startswith("rank:"):
        dtrain.set_group([100] * (n // 100))
    booster = xgb.train(params, dtrain, num_boost_round=n_trees)
    return booster, X


@pytest.fixture(scope="session")
def small_model_file(tmp_path_factory):
    """Returns a function (objective, **kwargs) -> (UBJSON model file, rows it was trained on)."""
    folder = tmp_path_factory.mktemp("small-models")
    cache: dict = {}

    def get(objective: str, fmt: str = "ubj", **kwargs):
        key = (objective, fmt, tuple(sorted(kwargs.items())))
        if key not in cache:
            booster, X = train_small(objective, **kwargs)
            path = folder / f"{objective.replace(':', '-')}-{len(cache)}.{fmt}"
            booster.save_model(str(path))
            cache[key] = (path, X)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def compiled_small(sample_model_dir, tmp_path_factory):
    """rtb-small compiled once for the session: (artifact path, manifest, extracted folder)."""
    from model_compile import compile_artifact
    from model_core.artifact import safe_extract

    folder = sample_model_dir("rtb-small")
    out = tmp_path_factory.mktemp("compiled-small")
    manifest = compile_artifact(folder / "model.tar.gz", out / "model.tar.gz",
                                sample_data=folder / "sample.csv")
    extracted = out / "extracted"
    safe_extract(out / "model.tar.gz", extracted)
    return out / "model.tar.gz", manifest, extracted
