"""The UBJSON decoder against XGBoost's own JSON of the same model, and hostile input."""
import json

import numpy as np
import pytest
import xgboost as xgb

from model_core import ubjson


def test_decodes_a_model_like_xgboost_reads_it(small_model_file):
    path, _ = small_model_file("multi:softprob", feature_names=True)
    decoded = ubjson.loads(path.read_bytes())
    booster = xgb.Booster()
    booster.load_model(str(path))
    # JSON prints float32 values in their shortest form; compare them as float32.
    assert as_float32(decoded) == as_float32(json.loads(bytes(booster.save_raw("json"))))
    assert len(decoded["learner"]["gradient_booster"]["model"]["trees"]) == 24


def as_float32(value):
    if isinstance(value, dict):
        return {k: as_float32(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_float32(v) for v in value]
    return np.float32(value) if isinstance(value, float) else value


@pytest.mark.parametrize("data, value", [
    (b"[i\x01U\x02Ti\xffZF]", [1, 2, True, -1, None, False]),
    (b"{i\x01aSi\x02hi}", {"a": "hi"}),
    (b"{#i\x01i\x01kD?\xf0\x00\x00\x00\x00\x00\x00", {"k": 1.0}),
    (b"[$d#i\x02?\x80\x00\x00@\x00\x00\x00", [1.0, 2.0]),
    (b"[$S#i\x02i\x01ai\x01b", ["a", "b"]),
    (b"N[NCx]", ["x"]),
])
def test_decodes_each_construct(data, value):
    assert ubjson.loads(data) == value


@pytest.mark.parametrize("data", [b"", b"[i\x01", b"Si\x05ab", b"[$d#L\x7f\xff\xff\xff\xff\xff\xff\xff",
                                  b"{i\x01a", b"Q", b"[" * 100 + b"]" * 100, b"Si\xffab"])
def test_hostile_or_broken_input_is_an_error(data):
    with pytest.raises(ubjson.UBJSONError):
        ubjson.loads(data)
