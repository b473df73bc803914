"""The verification tolerance grows with the output: a correct model with outputs around 20
passes, a library with one threshold one float step off still fails."""
import numpy as np
import pytest
import xgboost as xgb

from model_compile import compile_artifact, pipeline
from model_compile.verify import FLOAT32_EPS, VerificationError, compare, relative_tolerance

ROUNDS = 60


@pytest.fixture(scope="module")
def model_around_20(tmp_path_factory):
    """reg:squarederror, 60 trees of depth 6, outputs 10 to 30: float32 steps there are 2e-6."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 8)).astype(np.float32)
    y = 19 + 2 * X[:, 0] + 3 * np.sin(3 * X[:, 1]) + X[:, 2] * X[:, 3] + 0.5 * rng.normal(size=3000)
    booster = xgb.train({"objective": "reg:squarederror", "max_depth": 6, "eta": 0.1, "base_score": 19.0,
                         "nthread": 1, "seed": 1}, xgb.DMatrix(X, label=y), ROUNDS)
    path = tmp_path_factory.mktemp("reg20") / "model.json"
    booster.save_model(str(path))
    return path


def test_rule_is_trees_per_output_times_float32_epsilon():
    assert FLOAT32_EPS == 2.0 ** -23
    assert relative_tolerance(60) == 60 * 2.0 ** -23
    assert relative_tolerance(300, 3) == 100 * 2.0 ** -23      # each class sums its own trees
    ref = np.array([[20.0], [0.5]])
    off = ref + np.array([[1.5e-5], [1.5e-5]])
    result = compare(off, ref, candidate_name="c", reference_name="r", relative=relative_tolerance(60))
    assert not result.passed and result.worst_row == 1          # 1.5e-5 is too much at 0.5 only
    assert compare(off[:1], ref[:1], candidate_name="c", reference_name="r",
                   relative=relative_tolerance(60)).passed
    assert not compare(off[:1], ref[:1], candidate_name="c", reference_name="r").passed   # absolute only


def test_correct_model_with_outputs_around_20_passes_where_an_absolute_bound_failed(tmp_path, model_around_20):
    # The absolute bound alone rejects this correct model: the library sums the same float32
    # leaves in another order (this failure is what the relative part is for).
    with pytest.raises(VerificationError, match=r"tolerance 1e-05\)"):
        compile_artifact(model_around_20, tmp_path / "abs.tar.gz", measure_speed=False, relative=0.0)
    manifest = compile_artifact(model_around_20, tmp_path / "out.tar.gz", measure_speed=False)
    v = manifest.verification
    assert v.max_abs_diff > 1e-5                        # more than the old absolute bound...
    assert v.relative_tolerance == ROUNDS * FLOAT32_EPS  # ...within floor + 60 x eps x |output|
    assert v.tolerance == 1e-5 and "relative_tolerance" in v.rule
    assert v.max_abs_diff <= v.allowed(30.0)
    assert (tmp_path / "out.tar.gz").exists()


def test_threshold_one_float_step_off_still_fails(tmp_path, model_around_20, monkeypatch):
    """The quantization bug found earlier, reproduced in the built library: one threshold of
    feature 0 moved up by one float32 step. A row exactly on it takes the other branch,
    a whole leaf away, which no float32 rounding explains."""
    real_build = pipeline.build_library
    moved = {}

    def build_then_move_threshold(model, libpath, **kwargs):
        built = real_build(model, libpath, **kwargs)
        table = kwargs["description"].split_thresholds[0]
        data = bytearray(libpath.read_bytes())
        at = bytes(data).find(table.tobytes())
        assert at >= 0, "threshold table not found in the library"
        index = table.size // 2
        data[at + 4 * index: at + 4 * index + 4] = np.nextafter(table[index], np.float32(np.inf)).tobytes()
        libpath.write_bytes(bytes(data))
        moved["threshold"] = float(table[index])
        return built

    monkeypatch.setattr(pipeline, "build_library", build_then_move_threshold)
    with pytest.raises(VerificationError, match=r"compiled differs from xgboost .* x \|xgboost\|") as exc:
        compile_artifact(model_around_20, tmp_path / "out.tar.gz", measure_speed=False)
    assert moved and f"{moved['threshold']:.9g}" in str(exc.value)   # the row sits on that threshold
    assert not (tmp_path / "out.tar.gz").exists()
