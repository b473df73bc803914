"""The model-compile command: help, exit codes, and verification catching a corrupted library."""
import subprocess
import sys
import tarfile

import numpy as np
import pytest

import model_compile.pipeline as pipeline
from model_compile.cli import build_parser, main
from model_core.artifact import read_manifest, safe_extract


def test_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "model_compile", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in out
        assert action.help and len(action.help) > 15
    assert "INPUT" in out and "legacy binary" in out and "Exit status" in out


def test_compiles_a_sample_model_and_prints_a_summary(tmp_path, sample_model_dir, capsys):
    folder = sample_model_dir("rtb-small")
    rc = main([str(folder / "model.tar.gz"), "-o", str(tmp_path), "--sample-data",
               str(folder / "sample.csv"), "--annotate-data", str(folder / "sample.csv"), "--no-crossover"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert (tmp_path / "model.tar.gz").is_file()
    assert "binary:logistic, 50 trees, 7 features" in out and "max abs diff" in out
    assert "annotating branches on 2000 rows" in err and "verifying on 4000 rows" in err


@pytest.mark.parametrize("args, message", [
    (["{missing}", "-o", "{out}"], "no such model file"),
    (["{garbage}", "-o", "{out}"], "not an XGBoost model"),
    (["{model}", "-o", "{garbage}/m.tar.gz"], "cannot create the output folder"),
    (["{model}", "-o", "{out}", "--sample-data", "{garbage}"], "no data rows"),
    (["{model}", "-o", "{out}", "--sample-data", "{short}"], "row 2 has 2 values, the model takes 6"),
    (["{model}", "-o", "{out}", "--annotate-data", "{letters}"], "could not convert string"),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path, small_model_file, capsys, args, message):
    model, _ = small_model_file("binary:logistic")
    garbage = tmp_path / "garbage"
    garbage.write_text("not a model\n")
    (tmp_path / "short.csv").write_text("1,2,3,4,5,6\n1,2\n")
    (tmp_path / "letters.csv").write_text("a,b,c,d,e,f\n1,2,x,4,5,6\n")
    names = {"short": tmp_path / "short.csv", "letters": tmp_path / "letters.csv", "missing": tmp_path / "missing", "out": tmp_path / "out.tar.gz", "garbage": garbage,
             "model": model, "tmp": tmp_path}
    assert main([a.format(**names) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.tar.gz").exists()


def test_bad_option_exits_2():
    with pytest.raises(SystemExit) as exc:
        main(["model", "-o", "x", "--parallel-comp", "-3"])
    assert exc.value.code == 2


def test_corrupted_library_fails_verification_and_writes_nothing(tmp_path, sample_model_dir,
                                                                  monkeypatch, capsys):
    """Flip one quantization threshold inside the built .so (day_of_week's 3.0 -> 3.5):
    a real binary corruption, which verification must catch and report."""
    real_build = pipeline.build_library
    corrupted = {}

    def build_then_corrupt(model, libpath, **kwargs):
        built = real_build(model, libpath, **kwargs)
        table = kwargs["description"].split_thresholds[0]   # day_of_week: 1, 2, ..., 6
        data = bytearray(libpath.read_bytes())
        at = bytes(data).find(table.tobytes())
        assert at >= 0, "threshold table not found in the library"
        index = int(np.nonzero(table == 3.0)[0][0])
        data[at + 4 * index: at + 4 * index + 4] = np.float32(3.5).tobytes()
        libpath.write_bytes(bytes(data))
        corrupted["done"] = True
        return built

    monkeypatch.setattr(pipeline, "build_library", build_then_corrupt)
    folder = sample_model_dir("rtb-small")
    out = tmp_path / "model.tar.gz"
    rc = main([str(folder / "model.tar.gz"), "-o", str(out), "--sample-data", str(folder / "sample.csv"),
               "--generator", "tl2cgen"])
    err = capsys.readouterr().err
    assert corrupted and rc == 1
    assert "verification FAILED" in err
    assert "at row " in err and "compiled 0." in err and "xgboost 0." in err and "input [" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def hostile_archive(path, name, data=b"{}", **fields):
    import io

    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        for key, value in fields.items():
            setattr(info, key, value)
        info.size = len(data) if info.type == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: hostile_archive(p, "../xgboost-model"), "absolute or parent path"),
    (lambda p: hostile_archive(p, "xgboost-model", type=tarfile.SYMTYPE, linkname="/etc/passwd"), "is a link"),
    (lambda p: hostile_archive(p, "xgboost-model", b'{"learner":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
     "nested 100001 levels deep"),
])
def test_hostile_inputs_exit_2_and_write_nothing(tmp_path, capsys, make, message):
    (tmp_path / "in").mkdir()
    archive = make(tmp_path / "in" / "model.tar.gz")
    assert main([str(archive), "-o", str(tmp_path / "out.tar.gz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]        # no output, nothing beside
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["model.tar.gz"]


def test_a_pickle_that_calls_a_function_is_refused_without_running_it(tmp_path, capsys):
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    model = tmp_path / "xgboost-model"
    model.write_bytes(pickle.dumps(Evil(), protocol=2))
    assert main([str(model), "-o", str(tmp_path / "out.tar.gz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "without running anything" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out.tar.gz").exists()


def _corrupt_kernel_root(monkeypatch, corrupted):
    """Make pipeline.build_kernel_library move tree 0's root threshold in the built .so."""
    from model_compile.codegen import forest_arrays

    real_build = pipeline.build_kernel_library

    def build_then_corrupt(doc, libpath, **kwargs):
        built = real_build(doc, libpath, **kwargs)
        forest = forest_arrays(doc)
        nodes = np.empty(16, dtype=np.uint32)      # the first 8 nodes, as the library holds them
        nodes[0::2] = forest.threshold[:8].view(np.uint32)
        nodes[1::2] = forest.meta[:8]
        data = bytearray(libpath.read_bytes())
        at = bytes(data).find(nodes.tobytes())
        assert at >= 0, "node array not found in the library"
        data[at:at + 4] = np.float32(forest.threshold[0] + 1.0).tobytes()
        libpath.write_bytes(bytes(data))
        corrupted["done"] = True
        return built

    monkeypatch.setattr(pipeline, "build_kernel_library", build_then_corrupt)


def test_corrupted_kernel_library_fails_verification(tmp_path, sample_model_dir, monkeypatch, capsys):
    corrupted = {}
    _corrupt_kernel_root(monkeypatch, corrupted)
    folder = sample_model_dir("rtb-small")
    out = tmp_path / "model.tar.gz"
    rc = main([str(folder / "model.tar.gz"), "-o", str(out), "--sample-data", str(folder / "sample.csv"),
               "--generator", "kernel", "--no-crossover"])
    err = capsys.readouterr().err
    assert corrupted and rc == 1
    assert "verification FAILED" in err and "compiled (kernel) differs from xgboost" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_auto_drops_a_library_that_fails_verification(tmp_path, sample_model_dir, monkeypatch, capsys):
    """With both generators, a kernel library that fails verification is dropped, said so,
    and the verified TL2cgen library is shipped."""
    corrupted = {}
    _corrupt_kernel_root(monkeypatch, corrupted)
    folder = sample_model_dir("rtb-small")
    out = tmp_path / "model.tar.gz"
    rc = main([str(folder / "model.tar.gz"), "-o", str(out), "--sample-data", str(folder / "sample.csv"),
               "--no-crossover"])
    err = capsys.readouterr().err
    assert corrupted and rc == 0
    assert "kernel library dropped, failed verification" in err
    safe_extract(out, tmp_path / "x")
    manifest = read_manifest(tmp_path / "x")
    assert manifest.library.generator == "tl2cgen"
    assert "failed verification" in manifest.library.generator_choice["reason"]


@pytest.mark.parametrize("name", ["gblinear-0.90.bin", "current"])
def test_gblinear_has_nothing_to_compile_exit_4(tmp_path, capsys, name):
    import xgboost as xgb

    from tests.model_core.conftest import FIXTURES

    if name == "current":
        rng = np.random.default_rng(1)
        X = rng.normal(size=(100, 3)).astype(np.float32)
        booster = xgb.train({"booster": "gblinear", "nthread": 1}, xgb.DMatrix(X, label=X[:, 0]), 3)
        model = tmp_path / "model.json"
        booster.save_model(str(model))
    else:
        model = FIXTURES / name
    out = tmp_path / "out" / "model.tar.gz"
    assert main([str(model), "-o", str(out)]) == 4
    err = capsys.readouterr().err
    assert "gblinear model is a linear model" in err and "nothing to compile" in err
    assert "stock XGBoost" in err and not out.exists()
