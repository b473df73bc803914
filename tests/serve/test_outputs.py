"""serve.outputs: the stock container's selectable outputs, with a decision threshold."""
import numpy as np
import pytest

from serve.outputs import OutputError, OutputSelector

P = np.array([0.9, 0.3, 0.05, 0.5], dtype=np.float32)


def test_default_output_is_the_prediction():
    select = OutputSelector(None, "binary:logistic", 1)
    assert not select.selected
    out = select(P)
    assert list(out) == ["score"] and out["score"] is P


def test_binary_logistic_outputs_in_the_order_asked():
    select = OutputSelector(("probabilities", "predicted_label", "labels", "probability", "raw_score", "raw_scores"),
                            "binary:logistic", 1)
    out = select(P)
    assert list(out) == ["probabilities", "predicted_label", "labels", "probability", "raw_score", "raw_scores"]
    assert np.array_equal(out["predicted_label"], [1, 0, 0, 0])   # strictly above 0.5, as the stock container
    assert np.allclose(out["probabilities"], np.column_stack((1 - P, P)))
    assert np.array_equal(out["labels"], [[0, 1]] * 4)
    assert np.array_equal(out["probability"], P) and np.array_equal(out["raw_score"], P)


def test_the_decision_threshold_moves_the_label():
    out = OutputSelector(("predicted_label",), "binary:logistic", 1, threshold=0.04)(P)
    assert np.array_equal(out["predicted_label"], [1, 1, 1, 1])
    out = OutputSelector(("predicted_label",), "binary:logistic", 1, threshold=0.25)(P)
    assert np.array_equal(out["predicted_label"], [1, 1, 0, 1])


def test_logitraw_threshold_applies_on_the_margin_scale():
    margins = np.log(P / (1 - P))
    out = OutputSelector(("predicted_label", "raw_score"), "binary:logitraw", 1, threshold=0.25)(margins)
    assert np.array_equal(out["predicted_label"], [1, 1, 0, 1])
    assert np.array_equal(out["raw_score"], margins)


def test_multiclass_softprob():
    probabilities = np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]], dtype=np.float32)
    select = OutputSelector(("predicted_label", "probability", "probabilities", "labels"), "multi:softprob", 3)
    out = select(probabilities)
    assert np.array_equal(out["predicted_label"], [1, 0])
    assert np.array_equal(out["probability"], probabilities[[0, 1], [1, 0]]) and out["probabilities"] is probabilities
    assert np.array_equal(out["labels"], [[0, 1, 2]] * 2)


def test_multiclass_softmax_labels_from_indices_or_scores():
    select = OutputSelector(("predicted_label",), "multi:softmax", 3)
    assert np.array_equal(select(np.array([2.0, 0.0], dtype=np.float32))["predicted_label"], [2, 0])
    assert np.array_equal(select(np.array([[0.1, 0.9, 0.0]], dtype=np.float32))["predicted_label"], [1])


def test_regression():
    values = np.array([3.5, -1.0], dtype=np.float32)
    assert np.array_equal(OutputSelector(("predicted_score",), "reg:squarederror", 1)(values)["predicted_score"], values)


@pytest.mark.parametrize("keys, objective, match", [
    (("probability", "confidence"), "binary:logistic", "unknown output"),
    (("probability",), "reg:squarederror", "do not fit objective"),
    (("predicted_score",), "binary:logistic", "do not fit objective"),
    (("probabilities",), "binary:hinge", "do not fit objective"),
    (("predicted_label",), "rank:pairwise", "it has: none"),
])
def test_outputs_that_do_not_fit_fail_at_start(keys, objective, match):
    with pytest.raises(OutputError, match=match):
        OutputSelector(keys, objective, 1)
