"""compile_artifact end to end: real models, real gcc, real libraries, verified."""
import json
import tarfile

import numpy as np
import pytest
import xgboost as xgb

from model_compile import compile_artifact
from model_core.artifact import read_manifest, safe_extract, sha256_file
from model_core.runtime import CompiledModel
from model_core.machine import current_machine
from model_compile.verify import xgboost_predict


def extract(archive, dest):
    safe_extract(archive, dest)
    return dest


def test_rtb_small_round_trip(compiled_small, sample_model_dir):
    archive, manifest, folder = compiled_small
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["manifest.json", "model.so", "model.ubj"]
    assert read_manifest(folder) == manifest
    m = manifest
    assert (m.model.objective, m.model.num_tree, m.model.num_feature, m.model.num_class) == \
        ("binary:logistic", 50, 7, 1)
    assert m.model.source_format == "ubjson" and m.model.feature_names is None
    with tarfile.open(sample_model_dir("rtb-small") / "model.tar.gz") as tar:
        raw = tar.extractfile("xgboost-model").read()
    import hashlib
    assert m.model.source_sha256 == hashlib.sha256(raw).hexdigest()
    assert m.library.sha256 == sha256_file(folder / "model.so")
    assert m.library.platform == current_machine()["platform"] and m.library.libc == current_machine()["libc"]
    assert m.library.compiler.startswith("gcc ")
    assert m.library.generator in ("kernel", "tl2cgen") and m.library.generator_choice["timings"]
    assert (m.library.params["quantize"] == 1 if m.library.generator == "tl2cgen"
            else m.library.params == {"nodes": 2957, "max_depth": 5})
    assert m.library.entry_point == "mc_predict_dense"
    assert m.verification.reference == "xgboost" and m.verification.rows == 4000
    assert m.verification.sample_rows == 2000 and 0 <= m.verification.max_abs_diff <= 1e-5
    assert set(m.versions) >= {"treelite", "tl2cgen", "xgboost", "numpy", "python"}
    assert m.crossover_timings and m.crossover_timings[0]["rows"] == 1
    assert m.crossover_batch_size is None or m.crossover_batch_size in [t["rows"] for t in m.crossover_timings]

    # The artifact's two models predict what the source model predicts.
    X = np.genfromtxt(sample_model_dir("rtb-small") / "sample.csv", delimiter=",", dtype=np.float32)
    source = xgb.Booster()
    source.load_model(bytearray(raw))
    converted = xgb.Booster()
    converted.load_model(str(folder / "model.ubj"))
    expected = source.inplace_predict(X)
    assert np.array_equal(converted.inplace_predict(X), expected)
    assert np.abs(CompiledModel(folder / "model.so").predict(X) - expected).max() <= 1e-5


@pytest.mark.parametrize("objective, kwargs", [
    ("binary:logistic", {"base_score": 0.8}),
    ("binary:logitraw", {}),
    ("reg:squarederror", {"base_score": 10.0}),
    ("reg:logistic", {}),
    ("count:poisson", {}),
    ("reg:gamma", {}),
    ("reg:tweedie", {}),
    ("multi:softprob", {}),
    ("multi:softmax", {}),
    ("rank:pairwise", {}),
    ("rank:ndcg", {}),
    ("rank:map", {}),
    ("reg:squaredlogerror", {}),
    ("reg:pseudohubererror", {}),
    ("reg:absoluteerror", {}),
    ("binary:hinge", {}),
    ("survival:cox", {}),
    ("reg:squarederror", {"booster": "dart"}),
    ("binary:logistic", {"feature_names": True, "n_features": 30, "depth": 6}),
])
@pytest.mark.parametrize("generator", ["tl2cgen", "kernel"])
def test_objectives_compile_and_verify(tmp_path, small_model_file, objective, kwargs, generator):
    path, X = small_model_file(objective, **kwargs)
    manifest = compile_artifact(path, tmp_path / "out.tar.gz", sample_data=X[:200], measure_speed=False,
                                generator=generator)
    assert manifest.model.objective == objective
    assert manifest.library.generator == generator and manifest.library.entry_point == "mc_predict_dense"
    assert manifest.verification.max_abs_diff <= 1e-5 and manifest.verification.rows == 2200
    folder = extract(tmp_path / "out.tar.gz", tmp_path / "x")
    compiled = CompiledModel(folder / "model.so")
    booster = xgb.Booster()
    booster.load_model(str(path))
    got = compiled.predict(X).reshape(X.shape[0], -1)
    assert np.abs(got - xgboost_predict(booster, X, objective)).max() <= 1e-5
    if objective == "multi:softmax":   # probabilities whose argmax is XGBoost's label
        assert manifest.model.num_class == 3
        assert np.array_equal(got.argmax(axis=1), booster.inplace_predict(X).astype(int))
    if "base_score" in kwargs:
        assert manifest.model.base_score == [pytest.approx(kwargs["base_score"])]
    if kwargs.get("feature_names"):
        assert manifest.model.feature_names == [f"f{i}" for i in range(30)]


def test_options_reach_the_library(tmp_path, small_model_file):
    path, X = small_model_file("binary:logistic", n_trees=40)
    m = compile_artifact(path, tmp_path / "a.tar.gz", quantize=False, parallel_comp=0,
                         annotate=True, sample_data=X, measure_speed=False, generator="tl2cgen")
    assert m.library.params == {"quantize": 0, "annotate": True}
    m = compile_artifact(path, tmp_path / "b.tar.gz", parallel_comp=5, measure_speed=False,
                         generator="tl2cgen")
    assert m.library.params == {"quantize": 1, "parallel_comp": 5}


def test_output_folder_gets_model_tar_gz(tmp_path, small_model_file):
    path, _ = small_model_file("reg:squarederror")
    compile_artifact(path, tmp_path, measure_speed=False)
    assert (tmp_path / "model.tar.gz").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["model.tar.gz"]   # no temporary leftovers


def test_rtb_large_round_trip(tmp_path, sample_model_dir):
    """The 300-tree, 60-feature model with names and missing values: the heavy case
    (about a minute on 2 cores). Its rows around thresholds caught TL2cgen's 8-digit
    quantization table before model_compile rewrote it. Both generators build it, both
    are verified, and the manifest says which one was shipped and on what timings."""
    folder = sample_model_dir("rtb-large")
    lines = []
    manifest = compile_artifact(folder / "model.tar.gz", tmp_path / "model.tar.gz",
                                sample_data=folder / "sample.csv", progress=lines.append)
    assert manifest.model.num_tree == 300 and manifest.model.num_feature == 60
    assert manifest.model.feature_names and manifest.model.feature_names[0] == "day_of_week"
    assert manifest.verification.max_abs_diff <= 1e-5 and manifest.verification.rows == 4000
    assert any("compiling" in line for line in lines)
    assert any(line.startswith("verified compiled (kernel)") for line in lines)
    assert any(line.startswith("verified compiled:") for line in lines)
    choice = manifest.library.generator_choice
    assert [t["rows"] for t in choice["timings"]] == [1, 10, 100, 1000]
    log_ratio = sum(np.log(t["kernel_ms"] / t["tl2cgen_ms"]) for t in choice["timings"])
    assert manifest.library.generator == ("kernel" if log_ratio < 0 else "tl2cgen")
    if manifest.library.generator == "tl2cgen":
        assert manifest.library.params["parallel_comp"] == 19
    else:
        assert manifest.library.params == {"nodes": 84425, "max_depth": 8}
    # The compiled library is faster for one row: the product's point.
    one_row = manifest.crossover_timings[0]
    assert one_row["rows"] == 1 and one_row["compiled_ms"] < one_row["xgboost_ms"]
    x = extract(tmp_path / "model.tar.gz", tmp_path / "x")
    X = np.genfromtxt(folder / "sample.csv", delimiter=",", dtype=np.float32)
    booster = xgb.Booster()
    booster.load_model(str(x / "model.ubj"))
    direct = CompiledModel(x / "model.so")
    assert np.abs(direct.predict(X) - booster.inplace_predict(X)).max() <= 1e-5
    if manifest.library.generator == "tl2cgen":
        stock = CompiledModel(x / "model.so", backend="tl2cgen")   # 19 units, blocks of 64 rows
        assert np.array_equal(direct.predict(X), stock.predict(X))
        assert np.array_equal(direct.predict(X, margin=True), stock.predict(X, margin=True))
    else:   # leaves added in XGBoost's order, in float32: XGBoost's margins to the bit
        margin = booster.inplace_predict(X, predict_type="margin")
        assert np.array_equal(direct.predict(X, margin=True), margin)
    timings = __import__("model_compile.measure", fromlist=["measure"]).measure(x, X[:50], batches=(1, 10))
    assert [t["rows"] for t in timings] == [1, 10] and all(t["direct_us"] > 0 for t in timings)


def test_annotation_under_a_server_style_thread_limit(tmp_path, small_model_file, monkeypatch):
    """Servers and the image set OMP_NUM_THREADS=1; TL2cgen refuses an nthread above
    OpenMP's limit, so branch annotation and the build must stay within it."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path, X = small_model_file("binary:logistic", n_trees=10)
    m = compile_artifact(path, tmp_path / "a.tar.gz", annotate=True, sample_data=X, measure_speed=False,
                         generator="tl2cgen")
    assert m.library.params["annotate"] is True
