"""Compile XGBoost models to native code (TL2cgen + gcc), verify them against XGBoost, measure them.

One job: a user's model -> a verified, deployable ``model.tar.gz``. Public API:
:func:`compile_artifact` (also the ``model-compile`` command). Reading models,
the artifact contract and calling a library belong to :mod:`model_core`.
"""

__all__ = ["compile_artifact"]


def __getattr__(name):
    # Lazy, so that importing a submodule (model_compile.verify, say) pulls in no compiler.
    if name == "compile_artifact":
        from model_compile.pipeline import compile_artifact

        return compile_artifact
    raise AttributeError(f"module 'model_compile' has no attribute {name!r}")
