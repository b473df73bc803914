"""Models of every XGBoost version a SageMaker user may bring, as that version wrote them: legacy
binaries, pickled Boosters, old JSON and UBJSON (fixtures made by XGBoost 1.0.2-1.7.6 with
fixtures/make_legacy_fixtures.py, by 0.90, 0.82 and 0.72.1 with fixtures/make_pre1_fixtures.py, by
2.1.4 and 3.2.0 with make_v2_fixtures.py), the refusals with their messages, and the restricted
unpickler."""
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
# How each version's fixture script named what save_model/pickle wrote (".deprecated" is 2.x's name
# for the legacy binary).
FORMAT_OF_EXTENSION = {"pkl": "pickle", "bin": "legacy_binary", "deprecated": "legacy_binary",
                       "json": "json", "ubj": "ubjson"}
PRE_1_0 = sorted(name for name, (_, _, version) in EXPECTED.items() if version.startswith("0."))


def close(got, want, trees=50, floor=1e-6):
    """Within a few float32 steps of ``want`` (summing the trees in another order moves a
    float32 sum by about that much, more for larger outputs)."""
    got = np.asarray(got, dtype=np.float64).reshape(np.shape(want))
    return np.abs(got - want).max() <= floor + trees * np.finfo(np.float32).eps * np.abs(want).max()


def predict_current(booster, X, margin=False):
    """Current XGBoost's prediction: inplace for trees, a DMatrix for gblinear (no inplace there)."""
    if json.loads(booster.save_config())["learner"]["gradient_booster"]["name"] == "gblinear":
        return booster.predict(xgb.DMatrix(X, missing=np.nan), output_margin=margin)
    return booster.inplace_predict(X, predict_type="margin" if margin else "value")


V1 = ("1.0.2", "1.1.1", "1.2.1", "1.3.3", "1.4.2", "1.5.2", "1.6.2", "1.7.6")


def test_fixtures_cover_every_version_format_and_pickle_layout():
    """The inventory of docs/compile.md: every 1.x minor series in each format it wrote."""
    for version in V1:
        wanted = {"binary-logistic-{}.bin", "binary-logistic-{}.pkl", "dart-{}.bin"}
        wanted |= {f"{name}-{{}}.{ext}" for name in ("binary-logistic", "multi-softprob", "dart")
                   for ext in ("json",) + (("ubj",) if version >= "1.6" else ())}
        assert {w.format(version) for w in wanted} <= set(EXPECTED), version
    assert {"binary-logistic-2.1.4.deprecated", "dart-2.1.4.deprecated", "binary-logistic-3.2.0.pkl",
            "multi-softprob-1.7.6.bin", "count-poisson-1.7.6.bin"} <= set(EXPECTED)
    # 1.0 wrote the binary without "binf", as before 1.0 (but base_score untransformed).
    assert not (FIXTURES / "binary-logistic-1.0.2.bin").read_bytes().startswith(b"binf")
    assert (FIXTURES / "binary-logistic-1.1.1.bin").read_bytes().startswith(b"binf")
    assert (FIXTURES / "binary-logistic-2.1.4.deprecated").read_bytes().startswith(b"binf")
    # The pickled Booster's model bytes: CONFIG-offset + legacy binary (1.0-1.2), a JSON snapshot
    # (1.3-1.5), a UBJSON snapshot (1.6+).
    from model_core.legacy import unpickle_booster_state

    for version, start in (("1.0.2", CONFIG_HEADER), ("1.2.1", CONFIG_HEADER), ("1.3.3", b'{"Config"'),
                           ("1.5.2", b'{"Config"'), ("1.6.2", b"{L"), ("1.7.6", b"{L"), ("3.2.0", b"{L")):
        raw = (FIXTURES / f"binary-logistic-{version}.pkl").read_bytes()
        assert bytes(unpickle_booster_state(raw)["handle"]).startswith(start), version


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_converted_and_treelite_models_predict_what_old_xgboost_predicted(name):
    import treelite

    source = load_source(FIXTURES / name)
    assert source.format == FORMAT_OF_EXTENSION[name.rsplit(".", 1)[1]]
    output, margin, _ = EXPECTED[name]
    X = fixture_rows()
    booster = source.to_booster()           # converted where current XGBoost cannot read them
    assert close(predict_current(booster, X), output)
    assert close(predict_current(booster, X, margin=True), margin)
    if name.startswith("gblinear-"):       # Treelite reads tree ensembles only
        with pytest.raises(FormatError, match="must be gbtree or dart"):
            source.to_treelite()
    else:
        gtil = treelite.gtil.predict(source.to_treelite(), X)
        if name.startswith("multi-softmax-"):   # GTIL gives the probabilities, XGBoost the label
            gtil = gtil.reshape(-1, 3).argmax(axis=1)
        assert close(gtil, output)
    # The converted model survives a save/load round trip as UBJSON.
    reloaded = xgb.Booster()
    reloaded.load_model(bytearray(source.to_ubjson()))
    assert np.array_equal(predict_current(reloaded, X), predict_current(booster, X))


def test_pre_1_0_fixtures_cover_every_layout_without_binf_header():
    layouts = {name.rsplit("-", 1)[0] for name in PRE_1_0}
    assert {"binary-logistic", "binary-logitraw", "reg-squarederror", "multi-softprob", "multi-softmax",
            "count-poisson", "reg-gamma", "pruned-early-stopping", "dart", "gblinear", "saved-params"} <= layouts
    assert {version for _, _, version in EXPECTED.values()} >= {"0.72.1", "0.82", "0.90", "1.2.1", "1.7.6",
                                                                "2.1.4"}
    for name in PRE_1_0:
        raw = (FIXTURES / name).read_bytes()
        assert not raw.startswith(b"binf") and b"binf" not in raw[:64], name
    # Before 1.0 base_score is saved as a margin: logit(0.3) for binary:logistic with base_score 0.3.
    model = parse_legacy_binary((FIXTURES / "binary-logistic-0.90.bin").read_bytes())
    assert model.version == (0, 0) and model.base_score_is_margin
    assert abs(model.base_score - np.log(0.3 / 0.7)) < 1e-6
    assert not parse_legacy_binary((FIXTURES / "binary-logistic-1.7.6.bin").read_bytes()).base_score_is_margin
    assert parse_legacy_binary((FIXTURES / "pruned-early-stopping-0.72.1.bin").read_bytes()).attributes[
        "best_iteration"]
    dart = parse_legacy_binary((FIXTURES / "dart-0.90.bin").read_bytes())
    assert len(dart.weight_drop) == len(dart.trees) == 5 and min(dart.weight_drop) < 1.0


def test_sagemaker_0_90_pickle_holds_the_headerless_binary():
    from model_core.legacy import decode, unpickle_booster_state

    for version in ("0.90", "0.82", "0.72.1"):
        raw = (FIXTURES / f"binary-logistic-{version}.pkl").read_bytes()
        assert raw.startswith(b"\x80\x03")          # Python 3's default pickle protocol then
        handle = bytes(unpickle_booster_state(raw)["handle"])
        assert handle == (FIXTURES / f"binary-logistic-{version}.bin").read_bytes()
        assert decode(raw, "pickle", "m").kind == "legacy_binary"


def test_current_xgboost_really_cannot_read_them():
    for name in ("binary-logistic-1.7.6.bin", "binary-logistic-1.2.1.bin", "binary-logistic-0.90.bin",
                 "dart-0.72.1.bin", "gblinear-0.82.bin", "binary-logistic-1.0.2.bin",
                 "dart-2.1.4.deprecated"):
        # 3.x reads a path as JSON/UBJSON: an error, or a UnicodeDecodeError on these bytes.
        with pytest.raises((xgb.core.XGBoostError, UnicodeDecodeError)):
            xgb.Booster().load_model(str(FIXTURES / name))


# One of each format and version family (compiles are slow; every fixture is read, converted and
# predicted above): 1.0's and 1.3-1.5's JSON schemas, 1.6's UBJSON, 1.x dart, 2.x's ".deprecated"
# binary, a 3.x pickle, and pre-1.0 objectives whose base_score and transform differ (and a gpu:
# alias, renamed for Treelite).
@pytest.mark.parametrize("name", ["binary-logistic-1.2.1.pkl", "multi-softprob-1.7.6.bin",
                                  "binary-logistic-1.7.6.pkl", "count-poisson-1.7.6.bin",
                                  "binary-logistic-0.90.pkl", "dart-0.72.1.bin", "reg-gamma-0.82.bin",
                                  "binary-logitraw-0.90.bin", "multi-softmax-0.82.bin",
                                  "binary-logistic-2.1.4.pkl", "multi-softprob-1.0.2.json",
                                  "binary-logistic-1.4.2.pkl", "dart-1.6.2.ubj", "dart-1.7.6.bin",
                                  "multi-softprob-2.1.4.deprecated", "binary-logistic-3.2.0.pkl",
                                  "survival-cox-0.90.bin", "rank-pairwise-0.82.bin", "binary-hinge-0.82.bin",
                                  "reg-tweedie-0.72.1.bin", "gpu-binary-logistic-0.90.bin"])
def test_legacy_models_compile_verify_and_convert(tmp_path, name):
    # As SageMaker stored them: xgboost-model inside model.tar.gz.
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(FIXTURES / name, arcname="xgboost-model")
    manifest = compile_artifact(archive, tmp_path / "out.tar.gz", sample_data=FIXTURES / "rows.csv",
                                measure_speed=False)
    assert manifest.model.source_format == FORMAT_OF_EXTENSION[name.rsplit(".", 1)[1]]
    if manifest.model.source_format in ("json", "ubjson"):     # current XGBoost reads these as they are
        assert manifest.verification.reference == "xgboost" and manifest.conversion is None
    else:
        assert manifest.verification.reference == "gtil"
        assert manifest.conversion is not None and manifest.conversion.max_abs_diff <= 1e-5
        assert manifest.conversion.rows == manifest.verification.rows == 60 + 2000
    safe_extract(tmp_path / "out.tar.gz", tmp_path / "x")
    assert read_manifest(tmp_path / "x") == manifest          # conversion figures survive the JSON
    output, _, _ = EXPECTED[name]
    X = fixture_rows()
    ubj = xgb.Booster()
    ubj.load_model(str(tmp_path / "x" / "model.ubj"))
    assert close(ubj.inplace_predict(X), output)
    compiled = CompiledModel(tmp_path / "x" / "model.so").predict(X)
    if name.startswith("multi-softmax-"):     # the library returns probabilities, XGBoost the label
        compiled = compiled.reshape(-1, 3).argmax(axis=1)
    assert close(compiled, output, floor=1e-5)


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
    with pytest.raises(FormatError, match="claims num_trees = -5"):
        parse_legacy_binary(bytes(bad))
    path = tmp_path / "bad.bin"
    path.write_bytes(raw[:300])
    with pytest.raises(FormatError):
        load_source(path).to_booster()


@pytest.mark.parametrize("name", ["dump-0.72.1.txt", "dump-0.82.txt", "dump-0.90.txt", "dump-0.82.json",
                                  "dump-0.90.json"])
def test_dump_model_output_of_old_xgboost_is_refused_as_not_a_model(name):
    # Before 1.0 no XGBoost wrote a JSON model; what users have is dump_model's text or JSON.
    with pytest.raises(FormatError, match=r"not an XGBoost model \(JSON, UBJSON, legacy binary or a "
                                          r"pickled Booster\); it starts with"):
        load_source(FIXTURES / name)


def test_other_boosters_prediction_buffers_and_old_pickle_protocols_are_refused_by_name(tmp_path):
    raw = (FIXTURES / "binary-logistic-1.7.6.bin").read_bytes()
    booster_name = raw.index(b"gbtree")
    path = tmp_path / "m.bin"
    path.write_bytes(raw[:booster_name] + b"gbxxxx" + raw[booster_name + 6:])
    with pytest.raises(FormatError, match="'gbxxxx' boosters are not supported"):
        load_source(path).to_booster()
    # num_pbuffer, the gbtree struct's fifth field: what XGBoost before 0.7 saved a buffer for
    buffered = bytearray(raw)
    struct.pack_into("<q", buffered, booster_name + 6 + 16, 400)
    path.write_bytes(bytes(buffered))
    with pytest.raises(FormatError, match=r"carries a prediction buffer \(XGBoost before 0.7\)"):
        load_source(path).to_booster()
    # Python 2's default pickle protocols (0 and 1) carry no PROTO opcode: not a model.
    for protocol in (0, 1):
        path.write_bytes(pickle.dumps({"handle": bytearray(raw)}, protocol=protocol))
        with pytest.raises(FormatError, match="not an XGBoost model .*; it starts with"):
            load_source(path)


def test_vector_leaf_trees_are_refused_by_name():
    # 2.x writes size_leaf_vector 1 (a scalar leaf) where 1.x wrote 0, and refuses to write vector
    # leaves to this format at all; a file claiming a longer leaf vector is refused with its message.
    raw = bytearray((FIXTURES / "binary-logistic-2.1.4.deprecated").read_bytes())
    first_tree = 4 + 136 + 8 + len("binary:logistic") + 8 + len("gbtree") + 160
    assert struct.unpack_from("<i", raw, first_tree + 20) == (1,)
    assert parse_legacy_binary(bytes(raw)).trees
    struct.pack_into("<i", raw, first_tree + 20, 3)
    with pytest.raises(FormatError, match="vector-leaf trees are not supported"):
        parse_legacy_binary(bytes(raw))


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


def test_truncated_pre_1_0_binaries_are_clear_errors_and_random_bytes_are_not_models(tmp_path):
    from model_core.formats import detect_format

    for name in ("binary-logistic-0.90.bin", "dart-0.82.bin", "gblinear-0.72.1.bin"):
        raw = (FIXTURES / name).read_bytes()
        assert detect_format(raw[:512]) == "legacy_binary"
        for cut in (200, len(raw) - 3):
            with pytest.raises(FormatError, match="truncated|corrupt"):
                parse_legacy_binary(raw[:cut])
    rng = np.random.default_rng(3)
    for _ in range(200):
        assert detect_format(rng.bytes(512)) in (None, "pickle")
    # The right struct with a booster name no XGBoost wrote is not taken for a model.
    raw = bytearray((FIXTURES / "binary-logistic-0.90.bin").read_bytes())
    raw[136 + 8 + 15 + 8:136 + 8 + 15 + 8 + 6] = b"gbxxxx"
    assert detect_format(bytes(raw[:512])) is None
