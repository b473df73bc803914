"""Fixtures of the bench tests: the deployed (compiled) variant of a sample model."""
from __future__ import annotations

import pytest


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
