"""serve.loading: the predictor chosen for each model folder, and the fallback to stock
XGBoost (with one loud warning naming the reason) whenever the compiled library cannot serve."""
import json
import logging
import shutil

import numpy as np
import pytest
import xgboost as xgb

from model_core.artifact import LIBRARY_NAME, MANIFEST_NAME, MODEL_NAME, sha256_file
from serve.loading import ModelLoadError, announce_fallback, load_model
from serve.predictors import GtilPredictor, StockPredictor
from tests.serve.conftest import REPO_ROOT, sample_rows


@pytest.fixture()
def artifact_copy(compiled_model_dir, tmp_path):
    """A scratch copy of the compiled rtb-small artifact folder, to damage. Its crossover is
    set to 64 rows (the measured one varies from run to run), so that auto loads both the
    library and XGBoost."""
    folder = tmp_path / "model"
    shutil.copytree(compiled_model_dir("rtb-small"), folder)
    set_crossover(folder, 64)
    return folder


def set_crossover(folder, rows):
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps({**json.loads(path.read_text()), "crossover_batch_size": rows}))


def edit_manifest(folder, **changes):
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data[section][key] = value
    path.write_text(json.dumps(data))


def assert_stock_fallback(folder, caplog, reason: str, library_unusable: bool = True):
    with caplog.at_level(logging.WARNING, logger="serve.loading"):
        loaded = load_model(folder)
    assert loaded.predictor.name == "stock"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "COMPILED LIBRARY NOT USED" in warnings[0] and reason in warnings[0]
    assert any(reason in note for note in loaded.notes) and reason in loaded.fallback
    # announce=False (a multi-model worker that may still drop the load): the warning waits for the caller
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="serve.loading"):
        quiet = load_model(folder, announce=False)
        assert quiet.fallback == loaded.fallback and not caplog.records
        announce_fallback(quiet)
    assert [r.getMessage() for r in caplog.records] == warnings
    booster = xgb.Booster(model_file=str(folder / MODEL_NAME))
    rows = np.random.default_rng(0).normal(size=(20, 7)).astype(np.float32)
    assert np.array_equal(loaded.predictor.predict(rows), booster.inplace_predict(rows))
    if library_unusable:   # forced compiled refuses to start rather than fall back
        with pytest.raises(ModelLoadError, match="SERVE_PREDICTOR=compiled"):
            load_model(folder, "compiled")


def test_a_compiled_artifact_is_served_compiled(artifact_copy, sample_model_dir):
    folder = artifact_copy
    loaded = load_model(folder)
    assert (loaded.objective, loaded.num_class, loaded.num_feature) == ("binary:logistic", 1, 7)
    assert loaded.predictor.name == "router(compiled below 64 rows, stock from 64)"
    assert loaded.fallback is None
    set_crossover(folder, None)
    assert load_model(folder).predictor.name == "compiled"
    rows, _ = sample_rows(sample_model_dir, "rtb-small")
    booster = xgb.Booster(model_file=str(folder / MODEL_NAME))
    assert np.max(np.abs(loaded.predictor.predict(rows) - booster.inplace_predict(rows))) < 1e-5
    assert load_model(folder, "compiled").predictor.name == "compiled"
    assert isinstance(load_model(folder, "stock").predictor, StockPredictor)


def test_corrupted_library_falls_back_to_stock(artifact_copy, caplog):
    library = artifact_copy / LIBRARY_NAME
    data = bytearray(library.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    library.write_bytes(bytes(data))
    assert_stock_fallback(artifact_copy, caplog, "does not match its manifest checksum")


def test_unloadable_library_with_a_matching_checksum_falls_back(artifact_copy, caplog):
    library = artifact_copy / LIBRARY_NAME
    library.write_bytes(b"\x7fELF but not really a shared library")
    edit_manifest(artifact_copy, library__sha256=sha256_file(library))
    assert_stock_fallback(artifact_copy, caplog, "failed to load")


def test_missing_library_falls_back(artifact_copy, caplog):
    (artifact_copy / LIBRARY_NAME).unlink()
    assert_stock_fallback(artifact_copy, caplog, "missing")


@pytest.mark.parametrize("change, reason", [
    ({"library__platform": "linux_aarch64"}, "compiled for linux_aarch64"),
    ({"library__libc": "glibc 9.99"}, "glibc 9.99"),
    ({"library__libc": "musl 1.2.4"}, "musl"),
    ({"versions__tl2cgen": "0.3.1"}, "TL2cgen 0.3.1"),
    # This x86-64 CPU has none of the arm64 extensions a Graviton3 tuning may use.
    ({"library__cpu": "neoverse-v1"}, "tuned for neoverse-v1 (Graviton3); this CPU lacks atomics"),
])
def test_a_library_for_another_runtime_falls_back(artifact_copy, caplog, change, reason):
    edit_manifest(artifact_copy, **change)
    assert_stock_fallback(artifact_copy, caplog, reason)


def test_a_library_from_another_model_falls_back(artifact_copy, caplog):
    """model.ubj replaced by another 7-feature model: the probe rows expose the mismatch."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(500, 7)).astype(np.float32)
    other = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                      xgb.DMatrix(X, label=(X[:, 0] > 0).astype(np.float32)), num_boost_round=5)
    other.save_model(str(artifact_copy / MODEL_NAME))
    assert_stock_fallback(artifact_copy, caplog, "disagree", library_unusable=False)


def test_a_library_for_another_feature_count_falls_back(artifact_copy, caplog, bare_model_dir):
    shutil.copy(bare_model_dir("rtb-large") / "xgboost-model", artifact_copy / MODEL_NAME)
    with caplog.at_level(logging.WARNING, logger="serve.loading"):
        loaded = load_model(artifact_copy)
    assert loaded.predictor.name == "stock" and loaded.num_feature == 60
    assert "takes 7 features" in caplog.text


def test_unusable_manifest_falls_back(artifact_copy, caplog):
    (artifact_copy / MANIFEST_NAME).write_text("{not json")
    assert_stock_fallback(artifact_copy, caplog, "manifest is unusable")


def test_models_that_cannot_load_fail_with_a_clear_message(tmp_path, bare_model_dir):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="no XGBoost model file"):
        load_model(empty)
    (empty / "xgboost-model").write_bytes(b"definitely not a model")
    with pytest.raises(ModelLoadError, match="not an XGBoost model"):
        load_model(empty)
    with pytest.raises(ModelLoadError, match="no compiled artifact"):
        load_model(bare_model_dir("rtb-small"), "compiled")


def test_gtil_predictor_matches_xgboost(bare_model_dir, sample_model_dir):
    """GTIL serves models XGBoost cannot load; on one it can, both must agree."""
    from model_core.description import ModelDescription
    from model_core.formats import load_source

    source = load_source(bare_model_dir("rtb-small"))
    gtil = GtilPredictor(source.to_treelite())
    rows, _ = sample_rows(sample_model_dir, "rtb-small")
    assert np.max(np.abs(gtil.predict(rows) - source.to_booster().inplace_predict(rows))) < 1e-5
    description = ModelDescription.from_treelite(source.to_treelite())
    assert (description.objective, description.num_class) == ("binary:logistic", 1)


# One of each version and format family (model_core's tests read every fixture): the objective
# each fixture was trained with is the start of its name.
SERVED_FIXTURES = {
    "binary-logistic-0.72.1.bin": "binary:logistic", "rank-pairwise-0.72.1.bin": "rank:pairwise",
    "survival-cox-0.82.bin": "survival:cox", "reg-logistic-0.82.bin": "reg:logistic",
    "gpu-binary-logistic-0.82.bin": "binary:logistic", "binary-logistic-0.90.pkl": "binary:logistic",
    "reg-tweedie-0.90.bin": "reg:tweedie", "binary-hinge-0.90.bin": "binary:hinge",
    "multi-softprob-1.0.2.json": "multi:softprob", "dart-1.1.1.bin": "binary:logistic",
    "binary-logistic-1.2.1.pkl": "binary:logistic", "binary-logistic-1.4.2.pkl": "binary:logistic",
    "binary-logistic-1.5.2.json": "binary:logistic", "dart-1.6.2.ubj": "binary:logistic",
    "binary-logistic-1.7.6.bin": "binary:logistic", "multi-softprob-2.1.4.deprecated": "multi:softprob",
    "binary-logistic-3.2.0.pkl": "binary:logistic"}


@pytest.mark.parametrize("name", sorted(SERVED_FIXTURES))
def test_old_xgboost_models_are_served_as_that_xgboost_predicted(tmp_path, name):
    """SageMaker artifacts of XGBoost 0.72-3.x (a pickled Booster, a legacy binary, old JSON and
    UBJSON), served bare and read safely by model_core: the stock predictor answers what the XGBoost
    that wrote the file answered for the same rows."""
    fixtures = REPO_ROOT / "tests" / "model_core" / "fixtures"
    shutil.copy(fixtures / name, tmp_path / "xgboost-model")
    loaded = load_model(tmp_path)
    assert loaded.objective == SERVED_FIXTURES[name]
    rows = np.genfromtxt(fixtures / "rows.csv", delimiter=",", dtype=np.float32)
    version = name.rsplit("-", 1)[1].rsplit(".", 1)[0]
    expected = np.array(json.loads((fixtures / f"expected-{version}.json").read_text())["models"][name]["output"],
                        dtype=np.float32)
    got = np.asarray(loaded.predictor.predict(rows)).reshape(expected.shape)
    assert np.max(np.abs(got - expected)) <= 1e-6 + 1e-6 * np.abs(expected).max()


# --- hostile artifacts: nothing of theirs runs ------------------------------------------------

@pytest.fixture()
def evil_library(tmp_path):
    """A shared library whose constructor writes a marker file the moment it is loaded."""
    import subprocess

    marker = tmp_path / "library-ran"
    source = tmp_path / "evil.c"
    source.write_text('#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                      f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    library = tmp_path / "evil.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library, marker


def test_a_manifest_naming_a_library_outside_the_folder_is_not_loaded(artifact_copy, caplog, evil_library):
    library, marker = evil_library
    # the checksum matches: only the path check stands between the server and the library
    edit_manifest(artifact_copy, library__file=f"../{library.name}", library__sha256=sha256_file(library))
    assert (artifact_copy.parent / library.name).is_file()       # it is there, beside the folder
    assert_stock_fallback(artifact_copy, caplog, "manifest names the file")
    assert not marker.exists()


def test_a_swapped_library_is_not_loaded(artifact_copy, caplog, evil_library):
    library, marker = evil_library
    shutil.copy(library, artifact_copy / LIBRARY_NAME)       # the manifest's sha256 is the real one's
    assert_stock_fallback(artifact_copy, caplog, "does not match its manifest checksum")
    assert not marker.exists()


@pytest.mark.parametrize("raw, message", [
    (b'{"learner":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
    (b"[$Z#L\x7f\xff\xff\xff\xff\xff\xff\xff", "not an XGBoost model|claims"),
])
def test_a_hostile_model_file_is_a_clear_load_error(tmp_path, raw, message):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "xgboost-model").write_bytes(raw)
    with pytest.raises(ModelLoadError, match=message):
        load_model(folder)


def test_serve_refuses_a_hostile_model_tar_gz_and_extracts_nothing(tmp_path):
    import io
    import subprocess
    import sys
    import tarfile

    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, kind in (("xgboost-model", tarfile.REGTYPE), ("evil", tarfile.SYMTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            info.size = 2 if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(b"{}") if kind == tarfile.REGTYPE else None)
    proc = subprocess.run([sys.executable, "-m", "serve.cli", "--model", str(archive), "--port", "0"],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)})
    assert proc.returncode == 1
    assert "is a link" in proc.stderr and "Traceback" not in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["model.tar.gz"]    # its scratch folder is gone, nothing left


@pytest.mark.parametrize("version", ["0.90", "0.82", "0.72.1"])
def test_gblinear_models_are_served_by_stock_xgboost(tmp_path, version):
    """gblinear has no trees to compile: a bare one (here as old XGBoost saved it) is served by
    XGBoost, with the answer that version gave."""
    from serve.predictors import LinearPredictor

    fixtures = REPO_ROOT / "tests" / "model_core" / "fixtures"
    shutil.copy(fixtures / f"gblinear-{version}.bin", tmp_path / "xgboost-model")
    loaded = load_model(tmp_path)
    assert isinstance(loaded.predictor, LinearPredictor) and loaded.objective == "reg:squarederror"
    rows = np.genfromtxt(fixtures / "rows.csv", delimiter=",", dtype=np.float32)
    expected = json.loads((fixtures / f"expected-{version}.json").read_text())["models"][
        f"gblinear-{version}.bin"]["output"]
    assert np.max(np.abs(loaded.predictor.predict(rows) - np.asarray(expected))) < 1e-5
    assert loaded.predictor.predict(rows[:1]).shape == (1,)


def test_current_gblinear_model_is_served_by_stock_xgboost(tmp_path):
    from serve.predictors import LinearPredictor

    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    booster = xgb.train({"booster": "gblinear", "objective": "binary:logistic", "nthread": 1},
                        xgb.DMatrix(X, label=(X[:, 0] > 0).astype(np.float32)), 5)
    booster.save_model(str(tmp_path / "model.ubj"))
    loaded = load_model(tmp_path)
    assert isinstance(loaded.predictor, LinearPredictor) and loaded.objective == "binary:logistic"
    expected = booster.predict(xgb.DMatrix(X))
    assert np.max(np.abs(loaded.predictor.predict(X) - expected)) < 1e-6


@pytest.fixture(scope="module")
def two_target_dir(sample_model_dir, tmp_path_factory):
    """rtb-small compiled for arm64 (tuned for Graviton3) and for this machine, extracted."""
    from model_compile import compile_artifact
    from model_core.artifact import safe_extract

    source = sample_model_dir("rtb-small")
    out = tmp_path_factory.mktemp("two-targets")
    compile_artifact(source / "model.tar.gz", out / "model.tar.gz", sample_data=source / "sample.csv",
                     targets=["linux-x86_64", "linux-aarch64"], cpu="neoverse-v1", measure_speed=False)
    safe_extract(out / "model.tar.gz", out / "model")
    return out / "model"


def test_the_library_for_this_machine_is_picked_wherever_it_is_listed(two_target_dir, tmp_path, caplog,
                                                                      sample_model_dir):
    folder = tmp_path / "model"
    shutil.copytree(two_target_dir, folder)
    # List the arm64 library first, as an artifact compiled on an arm64 machine would.
    data = json.loads((folder / MANIFEST_NAME).read_text())
    data["library"], data["other_libraries"] = data["other_libraries"][0], [data["library"]]
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="serve.loading"):
        loaded = load_model(folder)
    assert loaded.predictor.name == "compiled" and not caplog.records
    rows, _ = sample_rows(sample_model_dir, "rtb-small")
    booster = xgb.Booster(model_file=str(folder / MODEL_NAME))
    assert np.max(np.abs(loaded.predictor.predict(rows) - booster.inplace_predict(rows))) < 1e-5


def test_an_artifact_with_libraries_only_for_other_machines_falls_back(two_target_dir, tmp_path, caplog):
    folder = tmp_path / "model"
    shutil.copytree(two_target_dir, folder)
    (folder / LIBRARY_NAME).unlink()
    data = json.loads((folder / MANIFEST_NAME).read_text())
    data["library"], data["other_libraries"] = data["other_libraries"][0], []
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    assert_stock_fallback(folder, caplog, "compiled for linux_aarch64, this machine is linux_x86_64")


def test_pick_library_names_every_librarys_reason(two_target_dir):
    from model_core.artifact import read_manifest
    from serve.loading import pick_library

    manifest = read_manifest(two_target_dir)
    graviton2 = {"platform": "linux_aarch64", "libc": "glibc 2.36", "cpu": "x",
                 "features": ["atomics", "fphp", "asimdhp", "asimdrdm", "asimddp", "lrcpc"]}
    library, why = pick_library(manifest, graviton2)
    assert library is None
    assert why == ("no library of the artifact runs on this machine: model.so: library was compiled for "
                   "linux_x86_64, this machine is linux_aarch64 | model-linux-aarch64-neoverse-v1.so: "
                   "library is tuned for neoverse-v1 (Graviton3); this CPU lacks sve, bf16, i8mm "
                   "(an older Graviton?)")
    graviton3 = {**graviton2, "features": graviton2["features"] + ["sve", "bf16", "i8mm"]}
    assert pick_library(manifest, graviton3)[0].file == "model-linux-aarch64-neoverse-v1.so"
