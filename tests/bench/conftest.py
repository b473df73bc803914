"""Fixtures of the bench tests: sample models extracted as SageMaker extracts them."""
from __future__ import annotations

import pytest

from model_compile.artifact import safe_extract


@pytest.fixture(scope="session")
def stock_model_dir(sample_model_dir, tmp_path_factory):
    """Function name -> folder holding the sample model's ``xgboost-model`` (as /opt/ml/model)."""
    made = {}

    def get(name: str):
        if name not in made:
            dest = tmp_path_factory.mktemp(f"stock-{name}")
            safe_extract(sample_model_dir(name) / "model.tar.gz", dest)
            made[name] = dest
        return made[name]

    return get
