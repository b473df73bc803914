"""XGBoost 1.x legacy binary models and pickled Boosters (fixtures made by XGBoost 1.7.6 and
1.2.1 with fixtures/make_legacy_fixtures.py), and the restricted unpickler."""
import json
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
import xgboost as xgb

from model_compile import compile_artifact
from model_core.artifact import read_manifest, safe_extract
from model_compile.cli import main as cli_main
from model_core.formats import FormatError, load_source
from model_core.legacy import CONFIG_HEADER, parse_legacy_binary
from model_core.runtime import CompiledModel
from tests.model_core.conftest import FIXTURES


def fixture_rows():
    lines = (FIXTURES / "rows.csv").read_text().splitlines()
    return np.array([[float(v) if v else np.nan for v in line.split(",")] for line in lines], dtype=np.float32)


def expected_predictions():
    """{fixture file name: (old XGBoost's output, its margin, its version)}"""
    found = {}
    for path in sorted(FIXTURES.glob("expected-*.json")):
        data = json.loads(path.read_text())
        for name, pred in data["models"].items():
            found[name] = (np.asarray(pred["output"]), np.asarray(pred["margin"]), data["xgboost"])
    return found


EXPECTED = expected_predictions()


def test_fixtures_cover_both_formats_and_both_pickle_layouts():
    assert {"binary-logistic-1.7.6.bin", "binary-logistic-1.2.1.bin", "binary-logistic-1.7.6.pkl",
            "binary-logistic-1.2.1.pkl", "multi-softprob-1.7.6.bin", "count-poisson-1.7.6.bin"} <= set(EXPECTED)
    # 1.2.1 pickles hold CONFIG-offset + legacy binary; 1.7.6 pickles a UBJSON snapshot.
    assert CONFIG_HEADER in (FIXTURES / "binary-logistic-1.2.1.pkl").read_bytes()
    assert CONFIG_HEADER not in (FIXTURES / "binary-logistic-1.7.6.pkl").read_bytes()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_converted_and_treelite_models_predict_what_old_xgboost_predicted(name):
    import treelite

    source = load_source(FIXTURES / name)
    assert source.format == ("pickle" if name.endswith(".pkl") else "legacy_binary")
    output, margin, _ = EXPECTED[name]
    X = fixture_rows()
    booster = source.to_booster()           # converted: current XGBoost cannot read these
    assert np.abs(booster.inplace_predict(X).reshape(output.shape) - output).max() <= 1e-6
    assert np.abs(booster.inplace_predict(X, predict_type="margin").reshape(margin.shape) - margin).max() <= 1e-5
    gtil = treelite.gtil.predict(source.to_treelite(), X).reshape(output.shape)
    assert np.abs(gtil - output).max() <= 1e-6
    # The converted model survives a save/load round trip as UBJSON.
    reloaded = xgb.Booster()
    reloaded.load_model(bytearray(source.to_ubjson()))
    assert np.array_equal(reloaded.inplace_predict(X), booster.inplace_predict(X))


def test_current_xgboost_really_cannot_read_them():
    for name in ("binary-logistic-1.7.6.bin", "binary-logistic-1.2.1.bin"):
        with pytest.raises(xgb.core.XGBoostError):
            xgb.Booster().load_model(str(FIXTURES / name))


@pytest.mark.parametrize("name", ["binary-logistic-1.2.1.pkl", "multi-softprob-1.7.6.bin",
                                  "binary-logistic-1.7.6.pkl", "count-poisson-1.7.6.bin"])
def test_legacy_models_compile_verify_and_convert(tmp_path, name):
    # As SageMaker stored them: xgboost-model inside model.tar.gz.
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(FIXTURES / name, arcname="xgboost-model")
    manifest = compile_artifact(archive, tmp_path / "out.tar.gz", sample_data=FIXTURES / "rows.csv",
                                measure_speed=False)
    assert manifest.model.source_format == ("pickle" if name.endswith(".pkl") else "legacy_binary")
    assert manifest.verification.reference == "gtil"
    assert manifest.conversion is not None and manifest.conversion.max_abs_diff <= 1e-5
    assert manifest.conversion.rows == manifest.verification.rows == 60 + 2000
    safe_extract(tmp_path / "out.tar.gz", tmp_path / "x")
    assert read_manifest(tmp_path / "x") == manifest          # conversion figures survive the JSON
    output, _, _ = EXPECTED[name]
    X = fixture_rows()
    ubj = xgb.Booster()
    ubj.load_model(str(tmp_path / "x" / "model.ubj"))
    assert np.abs(ubj.inplace_predict(X).reshape(output.shape) - output).max() <= 1e-6
    compiled = CompiledModel(tmp_path / "x" / "model.so").predict(X)
    assert np.abs(compiled.reshape(output.shape) - output).max() <= 1e-5


# --- the restricted unpickler ------------------------------------------------

class RunsACommand:
    """What an attacker pickles: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_its_command_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "xgboost-model"
    evil.write_bytes(pickle.dumps(RunsACommand(marker)))
    # Sanity: the payload is live (so the test can fail) - run it in a child process only.
    import subprocess
    import sys
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.loads(open({str(evil)!r}, 'rb').read())"],
                   check=True)
    assert marker.exists()
    marker.unlink()

    source = load_source(evil)
    assert source.format == "pickle"
    with pytest.raises(FormatError, match=r"refers to (posix|os|nt)\.system"):
        source.to_booster()
    assert not marker.exists()
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(evil, arcname="xgboost-model")
    assert cli_main([str(archive), "-o", str(tmp_path / "out.tar.gz")]) == 2
    assert not marker.exists() and not (tmp_path / "out.tar.gz").exists()


def test_booster_pickle_with_a_payload_hidden_in_its_state_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    genuine = (FIXTURES / "binary-logistic-1.7.6.pkl").read_bytes()
    state = {"handle": bytearray(b"x"), "feature_names": RunsACommand(marker)}
    # A Booster pickle whose state smuggles a callable in: the same opcodes pickle writes.
    body = pickle.dumps(state, protocol=4)[2:]  # drop PROTO
    evil = b"\x80\x04" + b"\x8c\x0cxgboost.core\x8c\x07Booster\x93)\x81" + body[:-1] + b"b."
    path = tmp_path / "model.pkl"
    path.write_bytes(evil)
    with pytest.raises(FormatError, match=r"refers to (posix|os|nt)\.system"):
        load_source(path).to_booster()
    assert not marker.exists()
    assert genuine.startswith(b"\x80\x04")


def test_pickle_of_something_else_is_not_a_booster(tmp_path):
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"handle": b"binf"}))
    with pytest.raises(FormatError, match="not an xgboost Booster"):
        load_source(path).to_booster()
    path.write_bytes(pickle.dumps([1, 2, 3])[:-3])
    with pytest.raises(FormatError, match="refused"):
        load_source(path).to_booster()


# --- damaged legacy files ------------------------------------------------------

def test_truncated_or_corrupt_legacy_binary_is_a_clear_error(tmp_path):
    raw = (FIXTURES / "binary-logistic-1.7.6.bin").read_bytes()
    for cut in (10, 200, len(raw) // 2):
        with pytest.raises(FormatError, match="truncated|corrupt"):
            parse_legacy_binary(raw[:cut])
    bad = bytearray(raw)
    offset = 4 + 136 + 8 + len("binary:logistic") + 8 + len("gbtree")
    bad[offset:offset + 4] = struct.pack("<i", -5)            # number of trees
    with pytest.raises(FormatError, match="claims -5 trees"):
        parse_legacy_binary(bytes(bad))
    path = tmp_path / "bad.bin"
    path.write_bytes(raw[:300])
    with pytest.raises(FormatError):
        load_source(path).to_booster()


def test_config_offset_out_of_range_is_a_clear_error(tmp_path):
    handle = CONFIG_HEADER + struct.pack("<q", 10**9) + b"binf" + b"\0" * 32

    class Booster:    # pickled under the real class name, without importing xgboost 1.x
        pass
    Booster.__module__, Booster.__qualname__ = "xgboost.core", "Booster"
    import sys
    import types
    module = types.ModuleType("xgboost.core")
    module.Booster = Booster
    saved = sys.modules.get("xgboost.core")
    sys.modules["xgboost.core"] = module
    try:
        obj = Booster()
        obj.__dict__["handle"] = bytearray(handle)
        raw = pickle.dumps(obj, protocol=3)
    finally:
        sys.modules["xgboost.core"] = saved
    path = tmp_path / "m.pkl"
    path.write_bytes(raw)
    with pytest.raises(FormatError, match="CONFIG-offset is out of range"):
        load_source(path).to_booster()
