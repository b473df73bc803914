"""XGBoost 1.x formats current XGBoost cannot read: the legacy binary and the pickled Booster."""
from __future__ import annotations


def to_xgboost_json(source) -> bytes:
    from model_compile.formats import FormatError

    raise FormatError(f"{source.origin}: {source.format} models are not supported yet")


def to_treelite(source):
    from model_compile.formats import FormatError

    raise FormatError(f"{source.origin}: {source.format} models are not supported yet")
