"""The sample models are written as SageMaker writes a training output."""
import json
import tarfile

import numpy as np
import pytest
import xgboost as xgb

from sample_models.data import auc

AUC_FLOOR = 0.70


@pytest.mark.parametrize("name, n_features, n_trees, depth",
                         [("rtb-small", 7, 50, 5), ("rtb-large", 60, 300, 8)])
def test_sample_model_artifact(sample_model_dir, name, n_features, n_trees, depth):
    folder = sample_model_dir(name)
    with tarfile.open(folder / "model.tar.gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["xgboost-model"] and members[0].isfile()
        raw = tar.extractfile(members[0]).read()

    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    assert booster.num_boosted_rounds() == n_trees
    assert booster.num_features() == n_features
    config = json.loads(booster.save_config())
    assert config["learner"]["objective"]["name"] == "binary:logistic"
    trees = booster.get_dump()
    assert len(trees) == n_trees and all(len(t.splitlines()) > 1 for t in trees)
    # The dump indents each node by its depth; leaves sit one below the deepest split.
    deepest_leaf = max(len(line) - len(line.lstrip("\t")) for t in trees for line in t.splitlines())
    assert deepest_leaf == depth

    holdout = np.genfromtxt(folder / "holdout.csv", delimiter=",", dtype=np.float32)
    y, X = holdout[:, 0], holdout[:, 1:]
    assert X.shape[1] == n_features
    sample = np.genfromtxt(folder / "sample.csv", delimiter=",", dtype=np.float32)
    assert np.array_equal(sample, X, equal_nan=True)
    assert auc(y, booster.inplace_predict(X)) > AUC_FLOOR
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["holdout_auc"] > AUC_FLOOR
