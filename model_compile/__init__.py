"""Compile XGBoost models Neo-style with Treelite + TL2cgen, verified against XGBoost.

Public API: :func:`compile_artifact` (also the ``model-compile`` command),
:func:`model_compile.formats.load_source`, :class:`model_compile.runtime.CompiledModel`,
:func:`model_compile.target.current_target`; the artifact contract is
:mod:`model_compile.artifact`.
"""

__all__ = ["compile_artifact"]


def __getattr__(name):
    # Lazy, so that `import model_compile.artifact` (the server) stays light.
    if name == "compile_artifact":
        from model_compile.pipeline import compile_artifact

        return compile_artifact
    raise AttributeError(f"module 'model_compile' has no attribute {name!r}")
