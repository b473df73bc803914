"""The code generation details model_compile adds to TL2cgen's."""
import re

import numpy as np
import pytest

from model_compile.compiler import _exact_quantize_thresholds, choose_parallel_comp
from model_core.description import ModelDescription
from model_core.formats import load_source


def test_parallel_comp_grows_with_tree_count():
    assert choose_parallel_comp(1) == 0 and choose_parallel_comp(16) == 0
    assert choose_parallel_comp(50) == 4 and choose_parallel_comp(300) == 19
    assert choose_parallel_comp(100_000) == 64


def test_quantize_table_is_rewritten_with_exact_float32_thresholds(tmp_path, small_model_file):
    import tl2cgen

    # Continuous features: thresholds that need all 9 significant digits of a float32.
    path, _ = small_model_file("binary:logistic", n_trees=30, depth=6, n_features=8)
    source = load_source(path)
    model = source.to_treelite()
    thresholds = ModelDescription.from_booster(source.to_booster()).split_thresholds
    tl2cgen.generate_c_code(model, str(tmp_path), {"quantize": 1})
    code = (tmp_path / "quantize.c").read_text()
    table = re.search(r"threshold\[\] = \{(.*?)\};", code, re.S).group(1)
    printed = np.array([np.float32(float(v)) for v in table.split(",") if v.strip()], dtype=np.float32)
    exact = np.concatenate([thresholds[f] for f in sorted(thresholds)])
    off_by_tl2cgen = int(np.sum(printed != exact))

    assert _exact_quantize_thresholds(tmp_path, thresholds) == off_by_tl2cgen
    table = re.search(r"threshold\[\] = \{(.*?)\};", (tmp_path / "quantize.c").read_text(), re.S).group(1)
    rewritten = np.array([np.float32(float.fromhex(v.strip())) for v in table.split(",") if v.strip()])
    assert np.array_equal(rewritten, exact)


def test_unexpected_quantize_layout_is_refused(tmp_path, small_model_file):
    from model_compile.compiler import CompileError

    path, _ = small_model_file("binary:logistic")
    thresholds = ModelDescription.from_booster(load_source(path).to_booster()).split_thresholds
    (tmp_path / "quantize.c").write_text("static const int th_begin[] = {0};\nstatic const int th_len[] = {3};\n"
                                         "static const float threshold[] = {1, 2, 3, };\n")
    with pytest.raises(CompileError, match="unexpected TL2cgen output"):
        _exact_quantize_thresholds(tmp_path, thresholds)
