"""CompiledModel: the direct entry point against tl2cgen.Predictor, shapes, threads, bad input."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from model_core.runtime import CompiledModel


@pytest.fixture(scope="module")
def small_lib(compiled_small):
    """rtb-small as compile_artifact ships it (whichever generator it chose)."""
    _, manifest, extracted = compiled_small
    return extracted / manifest.library.file


@pytest.fixture(scope="module")
def small_tl2cgen_lib(sample_model_dir, tmp_path_factory):
    """rtb-small compiled by TL2cgen: the library tl2cgen.Predictor can also load."""
    from model_compile import compile_artifact
    from model_core.artifact import safe_extract

    folder, out = sample_model_dir("rtb-small"), tmp_path_factory.mktemp("tl2cgen-small")
    compile_artifact(folder / "model.tar.gz", out / "m.tar.gz", measure_speed=False, generator="tl2cgen")
    safe_extract(out / "m.tar.gz", out / "x")
    return out / "x" / "model.so"


def sample_rows(sample_model_dir, with_missing=True):
    X = np.genfromtxt(sample_model_dir("rtb-small") / "sample.csv", delimiter=",", dtype=np.float32)
    if with_missing:
        X[::5, 1] = np.nan     # rtb-small has no missing values of its own
        X[::7, 3] = np.nan
    return X


def test_direct_entry_point_is_bit_identical_to_tl2cgen_predictor(small_tl2cgen_lib, sample_model_dir):
    direct, stock = CompiledModel(small_tl2cgen_lib), CompiledModel(small_tl2cgen_lib, backend="tl2cgen")
    assert direct.backend == "direct" and stock.backend == "tl2cgen"
    X = sample_rows(sample_model_dir)
    for margin in (False, True):
        a, b = direct.predict(X, margin=margin), stock.predict(X, margin=margin)
        assert a.dtype == np.float32 and a.shape == (X.shape[0],)
        assert np.array_equal(a, b)
    # Margins and probabilities are really different outputs.
    assert not np.allclose(direct.predict(X), direct.predict(X, margin=True))


def test_single_row_and_empty_batch(small_lib, sample_model_dir):
    model = CompiledModel(small_lib)
    X = sample_rows(sample_model_dir)
    one = model.predict(X[3:4])
    assert one.shape == (1,) and one[0] == model.predict(X)[3]
    assert model.predict(np.empty((0, 7), dtype=np.float32)).shape == (0,)


def test_float64_and_fortran_input_give_the_float32_answer(small_lib, sample_model_dir):
    model = CompiledModel(small_lib)
    X = sample_rows(sample_model_dir)[:50]
    expected = model.predict(X)
    assert np.array_equal(model.predict(X.astype(np.float64)), expected)
    assert np.array_equal(model.predict(np.asfortranarray(X)), expected)


@pytest.mark.parametrize("shape", [(3, 6), (3, 8), (7,), (2, 7, 1)])
def test_wrong_shape_is_a_clear_error(small_lib, shape):
    model = CompiledModel(small_lib)
    with pytest.raises(ValueError, match="expected rows of 7 features"):
        model.predict(np.zeros(shape, dtype=np.float32))


def test_concurrent_calls_from_threads_agree_with_serial(small_lib, sample_model_dir):
    model = CompiledModel(small_lib)
    X = sample_rows(sample_model_dir)
    chunks = [X[i:i + 7] for i in range(0, 700, 7)]
    expected = [model.predict(c) for c in chunks]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            got = list(pool.map(model.predict, chunks))
            assert all(np.array_equal(g, e) for g, e in zip(got, expected))


def test_multiclass_output_is_rows_by_classes(tmp_path, small_model_file):
    from model_compile import compile_artifact
    from model_core.artifact import safe_extract

    path, X = small_model_file("multi:softprob")
    compile_artifact(path, tmp_path / "m.tar.gz", measure_speed=False, generator="tl2cgen")
    safe_extract(tmp_path / "m.tar.gz", tmp_path / "x")
    model = CompiledModel(tmp_path / "x" / "model.so")
    out = model.predict(X[:10])
    assert out.shape == (10, 3) and model.num_class == 3
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(out, CompiledModel(tmp_path / "x" / "model.so", backend="tl2cgen").predict(X[:10]))


def test_missing_library_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        CompiledModel(tmp_path / "nope.so")


@pytest.mark.parametrize("parallel_comp", [0, 3])
def test_blocked_batches_are_bit_identical_for_one_and_several_units(tmp_path, small_model_file, parallel_comp):
    """Batches run MC_BLOCK_ROWS (64) rows at a time, unit by unit: 150 rows = 2 full
    blocks and a partial one must give exactly what TL2cgen's row-by-row predict gives."""
    from model_compile import compile_artifact
    from model_core.artifact import safe_extract

    path, X = small_model_file("multi:softprob", n_trees=12, depth=5)
    compile_artifact(path, tmp_path / "m.tar.gz", parallel_comp=parallel_comp, measure_speed=False,
                     generator="tl2cgen")
    safe_extract(tmp_path / "m.tar.gz", tmp_path / "x")
    direct = CompiledModel(tmp_path / "x" / "model.so")
    stock = CompiledModel(tmp_path / "x" / "model.so", backend="tl2cgen")
    for margin in (False, True):
        assert np.array_equal(direct.predict(X[:150], margin=margin), stock.predict(X[:150], margin=margin))
        singles = np.stack([direct.predict(X[i:i + 1], margin=margin)[0] for i in range(150)])
        assert np.array_equal(singles, direct.predict(X[:150], margin=margin))


def test_one_row_calls_agree_with_the_batch_and_never_share_their_output(small_lib, sample_model_dir):
    """One float32 row goes through the per-thread buffers: each answer is the batch's, strided
    and float64 rows give the same, and an answer already returned is not overwritten."""
    model = CompiledModel(small_lib)
    X = sample_rows(sample_model_dir)[:200]
    wide = np.repeat(X, 2, axis=1)[:, ::2]          # the same values, not C-contiguous
    for margin in (False, True):
        batch = model.predict(X, margin=margin)
        singles = [model.predict(X[i:i + 1], margin=margin) for i in range(len(X))]
        assert all(s.shape == (1,) and s.dtype == np.float32 for s in singles)
        assert np.array_equal(np.concatenate(singles), batch)      # the first answers are still intact
        assert np.array_equal(np.concatenate([model.predict(wide[i:i + 1], margin=margin) for i in range(50)]),
                              batch[:50])
        assert np.array_equal(model.predict(X[7:8].astype(np.float64), margin=margin), batch[7:8])
        assert np.array_equal(model.predict_batch(X[7:8], margin=margin), batch[7:8])


def test_one_row_calls_from_threads_get_their_own_answers(small_lib, sample_model_dir):
    model = CompiledModel(small_lib)
    X = sample_rows(sample_model_dir)[:400]
    expected = model.predict(X)

    def run(offset):
        got = [model.predict(X[i:i + 1])[0] for i in range(offset, len(X), 4) for _ in range(5)]
        return np.array_equal(np.asarray(got), np.repeat(expected[offset::4], 5))

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(run, range(4)))


def test_one_multiclass_row_is_one_row_of_classes(tmp_path, small_model_file):
    from model_compile import compile_artifact
    from model_core.artifact import safe_extract

    path, X = small_model_file("multi:softprob")
    compile_artifact(path, tmp_path / "m.tar.gz", measure_speed=False, generator="kernel")
    safe_extract(tmp_path / "m.tar.gz", tmp_path / "x")
    model = CompiledModel(tmp_path / "x" / "model.so")
    batch = model.predict(X[:20])
    singles = [model.predict(X[i:i + 1]) for i in range(20)]
    assert all(s.shape == (1, 3) for s in singles) and np.array_equal(np.concatenate(singles), batch)
