"""The model core: what a model is, read safely, and how a compiled one is called.

Used by ``model_compile``, ``serve`` and ``deploy``; imports none of them.

* :mod:`model_core.formats` - find, detect and read every XGBoost model format
  (:mod:`model_core.legacy` for 1.x binaries and pickles, :mod:`model_core.ubjson`);
  :mod:`model_core.errors` - the one error type they raise;
* :mod:`model_core.description` - the one description of a model (objective,
  classes, features, trees, thresholds);
* :mod:`model_core.artifact` - the deployable artifact's contract (manifest,
  safe archives, atomic writes);
* :mod:`model_core.machine` - the machine a library was built for and runs on;
* :mod:`model_core.runtime` - :class:`~model_core.runtime.CompiledModel`, the
  one way to call a compiled library.
"""
