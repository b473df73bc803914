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


@pytest.fixture(scope="session")
def deployed_model():
    """Function name -> ModelUnderTest with only the deployed (quantized) variant compiled.

    Compiled into the repo's git-ignored cache (artifacts/bench), reused while the
    source model and options are unchanged, as ``python -m bench`` itself does.
    """
    from bench.models import DEFAULT_ROOT, DEPLOYED_VARIANT, prepare_model
    from tests.conftest import REPO_ROOT

    def get(name: str):
        return prepare_model(name, root=REPO_ROOT / DEFAULT_ROOT, variants=(DEPLOYED_VARIANT,),
                             samples_root=REPO_ROOT / "artifacts/sample-models", progress=lambda line: None)

    return get
