"""The kernel generator: real libraries built by gcc, each CPU version against XGBoost."""
import ctypes

import numpy as np
import pytest
import treelite
import xgboost as xgb

from model_compile import compile_artifact
from model_compile.codegen import (ISA_NAMES, build_kernel_library, forest_arrays, treelite_document,
                                   unsupported_reason)
from model_compile.compiler import CompileError
from model_compile.verify import threshold_rows, xgboost_predict
from model_core.artifact import read_manifest, safe_extract
from model_core.description import ModelDescription
from model_core.runtime import CompiledModel
from tests.conftest import train_small

# Batch sizes around the kernel's blocks (64 rows) and lanes (16 rows AVX2, 32 AVX-512).
SIZES = (1, 3, 15, 16, 17, 31, 32, 33, 64, 65, 150)


def kernel_library(booster, path):
    build_kernel_library(treelite_document(treelite.frontend.from_xgboost(booster)), path)
    model = CompiledModel(path)
    fn = model._lib.mc_predict_dense_isa
    fn.restype = ctypes.c_int32
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32]
    return model, fn, int(model._lib.mc_kernel_isa())


@pytest.mark.parametrize("objective, kwargs", [
    ("binary:logistic", {"n_trees": 37, "depth": 6}),        # trees of uneven depth, not a multiple of 16
    ("multi:softprob", {"n_trees": 7, "depth": 3}),
    ("reg:squarederror", {"n_trees": 1, "depth": 1}),
])
def test_every_cpu_version_gives_the_same_answer_as_xgboost(tmp_path, objective, kwargs):
    booster, _ = train_small(objective, **kwargs)
    model, predict_isa, best = kernel_library(booster, tmp_path / "k.so")
    description = ModelDescription.from_booster(booster)
    X = threshold_rows(description.split_thresholds, description.num_feature, 400, seed=3)
    width = model.output_width
    for margin in (False, True):
        expected = xgboost_predict(booster, X, objective, margin=margin)
        for n in SIZES:
            answers = []
            for isa in range(best + 1):
                out = np.full((n, width), np.nan, dtype=np.float32)
                assert predict_isa(X.ctypes.data, n, X.shape[1], int(margin), out.ctypes.data, isa) == 0
                assert np.abs(out - expected[:n]).max() <= 1e-5, (ISA_NAMES[isa], n, margin)
                answers.append(out)
            assert all(np.array_equal(a, answers[0]) for a in answers), (n, margin)
        # CompiledModel runs the best version (the last answer, 150 rows).
        assert np.array_equal(model.predict(X[:n], margin=margin).reshape(n, width), answers[-1])
    # A version above what the CPU reports is refused, not run.
    out = np.empty((1, width), dtype=np.float32)
    assert predict_isa(X.ctypes.data, 1, X.shape[1], 0, out.ctypes.data, 3) == -3
    assert predict_isa(X.ctypes.data, 1, X.shape[1] + 1, 0, out.ctypes.data, 0) == -1


def test_layout_walks_breadth_first_with_leaves_that_stay_put(small_model_file):
    booster, _ = train_small("binary:logistic", n_trees=3, depth=3)
    forest = forest_arrays(treelite_document(treelite.frontend.from_xgboost(booster)))
    assert forest.num_tree == 3 and forest.tree_off.size == 16          # padded to a group of 16
    for t in range(3):
        start = forest.tree_off[t]
        end = forest.tree_off[t + 1] if t < 2 else forest.meta.size - 1
        meta, thr = forest.meta[start:end], forest.threshold[start:end]
        leaf = np.isnan(thr)
        assert np.array_equal((meta[leaf] & 0xFFFF), np.nonzero(leaf)[0])   # a leaf is its own left child
        assert np.all((meta[~leaf] & 0xFFFF) > np.nonzero(~leaf)[0])        # children come after
        assert forest.tree_depth[t] <= 3


def categorical_booster():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 12, 500), rng.normal(size=500)]).astype(np.float32)
    y = (np.isin(X[:, 0], [1, 4, 7]) ^ (X[:, 1] > 0)).astype(np.float32)
    dtrain = xgb.DMatrix(X, label=y, feature_types=["c", "q"], enable_categorical=True)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "max_cat_to_onehot": 1,
                         "tree_method": "hist", "nthread": 1}, dtrain, num_boost_round=5)
    return booster, X


def test_categorical_splits_are_deferred_to_tl2cgen_by_name(tmp_path):
    booster, X = categorical_booster()
    doc = treelite_document(treelite.frontend.from_xgboost(booster))
    assert "categorical splits" in unsupported_reason(doc)
    path = tmp_path / "cat.ubj"
    booster.save_model(str(path))
    with pytest.raises(CompileError, match="kernel generator does not compile this model: categorical"):
        compile_artifact(path, tmp_path / "k.tar.gz", measure_speed=False, generator="kernel")
    assert not (tmp_path / "k.tar.gz").exists()
    manifest = compile_artifact(path, tmp_path / "a.tar.gz", sample_data=X[:100], measure_speed=False)
    assert manifest.library.generator == "tl2cgen"
    assert "categorical splits" in manifest.library.generator_choice["reason"]
    safe_extract(tmp_path / "a.tar.gz", tmp_path / "x")
    assert read_manifest(tmp_path / "x").library.generator == "tl2cgen"


def test_old_manifests_without_a_generator_read_as_tl2cgen(compiled_small):
    import json

    from model_core.artifact import Manifest

    data = json.loads(compiled_small[1].to_json())
    del data["library"]["generator"], data["library"]["generator_choice"]
    library = Manifest.from_dict(data).library
    assert library.generator == "tl2cgen" and library.generator_choice == {}


def test_a_broken_walk_the_cpu_did_not_choose_still_fails_verification(tmp_path, small_model_file, monkeypatch):
    """Another instance may run another walk (AVX2 where this one has AVX-512): every walk this
    CPU has is verified. The portable walk's comparison flipped: the kernel compile fails naming
    that walk, and auto ships TL2cgen's library, saying why."""
    import model_compile.codegen as codegen
    from model_compile.verify import VerificationError

    right = "(x >= node.threshold)"
    source = codegen.kernel_source()
    assert source.count(right) == 1
    path, X = small_model_file("binary:logistic")
    good = tmp_path / "good.so"
    build_kernel_library(treelite_document(treelite.frontend.from_xgboost(xgb.Booster(model_file=str(path)))), good)
    chosen = codegen.KernelWalks(good, X.shape[1], 1).chosen
    monkeypatch.setattr(codegen, "kernel_source", lambda: source.replace(right, "(x < node.threshold)"))
    with pytest.raises(VerificationError) as caught:
        compile_artifact(path, tmp_path / "k.tar.gz", sample_data=X[:200], measure_speed=False, generator="kernel")
    expected = "compiled (kernel), portable walk differs" if chosen != 0 else "compiled (kernel) differs"
    assert expected in str(caught.value)
    assert not (tmp_path / "k.tar.gz").exists()
    manifest = compile_artifact(path, tmp_path / "a.tar.gz", sample_data=X[:200], measure_speed=False)
    assert manifest.library.generator == "tl2cgen"
    assert "failed verification" in manifest.library.generator_choice["reason"]
