"""Load what SageMaker put in the model folder and choose the predictor.

The folder holds either a compiled artifact (manifest, library, UBJSON model;
``model_core.artifact``) or a bare XGBoost model (SageMaker's ``xgboost-model``
or any model file ``model_core.formats`` reads).

For an artifact the library for this machine is picked (an artifact may carry
one per target: x86-64, arm64, arm64 tuned for one Graviton), checked against
this runtime (file checksum, platform, libc, CPU tuning, TL2cgen version), loaded, self-tested and compared with stock
XGBoost on a few rows. If any check fails, the server answers with the stock
predictor and logs one loud warning naming the reason, rather than failing:
a slower endpoint beats none. A model that cannot be loaded at all raises
ModelLoadError with a message that says what was found.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from model_core.artifact import ArtifactError, LibraryInfo, Manifest, read_manifest, sha256_file
from model_core.description import ModelDescription
from model_core.formats import FormatError, load_source
from model_core.machine import compatibility_problems
from serve.predictors import (CompiledPredictor, GtilPredictor, LinearPredictor, Predictor, RouterPredictor,
                              StockPredictor)

log = logging.getLogger(__name__)

class ModelLoadError(RuntimeError):
    """No model can be served from the folder; the message says what was found and why."""


@dataclass
class LoadedModel:
    """A predictor ready to answer, with what the response needs to know about the model."""

    predictor: Predictor
    objective: str
    num_class: int           # 1 for binary classification and regression
    num_feature: int
    source: str              # what was loaded, for logs
    notes: list[str] = field(default_factory=list)   # why this predictor, for the start log
    fallback: str | None = None   # why the compiled library is not used, when it is not

    def describe(self) -> str:
        return (f"predictor {self.predictor.name} for {self.source} "
                f"({self.objective}, {self.num_feature} features)"
                + "".join(f"; {note}" for note in self.notes))


def load_model(model_dir: Path, choice: str = "auto", *, announce: bool = True) -> LoadedModel:
    """Load the model in ``model_dir`` with the predictor ``choice`` (auto | compiled | stock).

    auto: the compiled library when it passes every check (routed with stock XGBoost by
    batch size when the manifest records a crossover), else stock with a loud warning.
    compiled: the compiled library for every batch size, or ModelLoadError.
    stock: XGBoost (Treelite's GTIL where XGBoost cannot read the model).
    ``announce=False``: the loud warning is left to the caller (:func:`announce_fallback`), for
    one that may still drop the load (a multi-model worker whose model was unloaded meanwhile).
    """
    loaded = _load(Path(model_dir), choice)
    if announce:
        announce_fallback(loaded)
    return loaded


def announce_fallback(loaded: LoadedModel) -> None:
    """The loud warning for a model served by stock XGBoost although it came compiled."""
    if loaded.fallback:
        log.warning("!!! COMPILED LIBRARY NOT USED: %s. Serving with stock XGBoost, several times slower "
                    "per request; rebuild the artifact with model-compile for this runtime. !!!", loaded.fallback)


def _load(model_dir: Path, choice: str) -> LoadedModel:
    if not model_dir.is_dir():
        raise ModelLoadError(f"model folder {model_dir} does not exist (set SM_MODEL_DIR for a local run)")
    try:
        manifest = read_manifest(model_dir)
    except ArtifactError as exc:
        if choice == "compiled":
            raise ModelLoadError(f"SERVE_PREDICTOR=compiled but the artifact's manifest is unusable: {exc}") from exc
        reason = f"the artifact's manifest is unusable ({exc})"
        loaded = _load_bare(model_dir)
        loaded.notes, loaded.fallback = [f"compiled library not used: {reason}"], reason
        return loaded
    if manifest is None:
        if choice == "compiled":
            raise ModelLoadError(f"SERVE_PREDICTOR=compiled but {model_dir} holds no compiled artifact "
                                 "(no manifest.json); compile the model with model-compile")
        return _load_bare(model_dir)
    return _load_artifact(model_dir, manifest, choice)


# --- compiled artifact ----------------------------------------------------------

def _load_artifact(model_dir: Path, manifest: Manifest, choice: str) -> LoadedModel:
    info = manifest.model
    source = f"compiled artifact {model_dir} ({info.num_tree} trees)"

    def stock_model(notes: list[str], fallback: str | None = None) -> LoadedModel:
        predictor, objective, num_class, _ = _stock_predictor(model_dir / info.file)
        return LoadedModel(predictor, objective, num_class, predictor.num_feature, source, notes, fallback)

    if choice == "stock":
        return stock_model(["stock predictor chosen by SERVE_PREDICTOR=stock"])

    try:
        compiled = _compiled_predictor(model_dir, manifest)
    except ModelLoadError as exc:
        if choice == "compiled":
            raise ModelLoadError(f"SERVE_PREDICTOR=compiled but the compiled library cannot be used: {exc}") from exc
        return stock_model([f"compiled library not used: {exc}"], str(exc))

    if choice == "compiled":
        return LoadedModel(compiled, info.objective, info.num_class, info.num_feature, source,
                           ["compiled predictor for every batch size (SERVE_PREDICTOR=compiled)"])
    crossover = manifest.crossover_batch_size
    if crossover is None:
        return LoadedModel(compiled, info.objective, info.num_class, info.num_feature, source,
                           ["the compiled library was faster at every batch size measured"])
    stock = stock_model([]).predictor
    mismatch = _disagreement(compiled, stock, manifest.verification)
    if mismatch:
        return stock_model([f"compiled library not used: {mismatch}"], mismatch)
    return LoadedModel(RouterPredictor(compiled, stock, crossover), info.objective, info.num_class,
                       info.num_feature, source,
                       [f"stock XGBoost measured faster from {crossover} rows per request at compile time"])


def pick_library(manifest: Manifest, runtime: dict | None = None) -> tuple[LibraryInfo | None, str | None]:
    """The artifact's first library built for this machine (platform, libc, CPU tuning), or
    (None, why none is: each library's reason). ``runtime``: as model_core.machine's."""
    reasons = []
    for library in manifest.libraries:
        problems = compatibility_problems(library.platform, library.libc, runtime, cpu=library.cpu)
        if not problems:
            return library, None
        reasons.append(f"{library.file}: {'; '.join(problems)}" if len(manifest.libraries) > 1
                       else "; ".join(problems))
    return None, ("no library of the artifact runs on this machine: " if len(reasons) > 1 else "") \
        + " | ".join(reasons)


def library_problem(model_dir: Path, manifest: Manifest) -> str | None:
    """Why no library of the artifact can run here (missing, altered, built for another
    platform, libc or CPU, another TL2cgen), or None when the one pick_library picks may be loaded."""
    library, problem = pick_library(manifest)
    if library is None:
        return problem
    path = model_dir / library.file
    if not path.is_file():
        return f"library {library.file} is missing from the artifact"
    digest = sha256_file(path)
    if digest != library.sha256:
        return (f"library {library.file} does not match its manifest checksum "
                f"(sha256 {digest[:12]}..., manifest says {library.sha256[:12]}...): corrupted or replaced")
    built_with = manifest.versions.get("tl2cgen")
    installed = _installed_version("tl2cgen")
    if built_with and installed and built_with != installed:
        return f"library generated by TL2cgen {built_with}, this runtime has TL2cgen {installed}"
    return None


def _installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _compiled_predictor(model_dir: Path, manifest: Manifest) -> CompiledPredictor:
    """Check, load and self-test the compiled library; ModelLoadError says why it cannot serve."""
    problem = library_problem(model_dir, manifest)
    if problem:
        raise ModelLoadError(problem)
    from model_core.runtime import CompiledModel

    library, _ = pick_library(manifest)
    try:
        predictor = CompiledPredictor(CompiledModel(model_dir / library.file))
    except Exception as exc:   # a library that fails to load may raise anything (OSError, RuntimeError, ...)
        raise ModelLoadError(f"library {library.file} failed to load: {exc}") from exc
    if predictor.num_feature != manifest.model.num_feature:
        raise ModelLoadError(f"library takes {predictor.num_feature} features, "
                             f"the manifest says {manifest.model.num_feature}")
    self_test(predictor)
    return predictor


def _disagreement(compiled: Predictor, stock: Predictor, verification) -> str | None:
    """Compare both predictors on a few probe rows; a message when they differ beyond what the
    compile-time verification allowed (``Verification.allowed``: a floor plus a part of the output)."""
    if compiled.num_feature != stock.num_feature:
        return (f"compiled library takes {compiled.num_feature} features, the artifact's XGBoost model "
                f"{stock.num_feature}: the library was not built from this model")
    rows = probe_rows(compiled.num_feature)
    ours, reference = compiled.predict(rows), stock.predict(rows)
    if ours.shape != reference.shape:
        return f"compiled library answers shape {ours.shape}, XGBoost {reference.shape} on probe rows"
    reference = reference.astype(np.float64)
    difference = np.abs(ours.astype(np.float64) - reference)
    if not (difference <= verification.allowed(reference) + 1e-6).all():
        return (f"compiled library and XGBoost disagree by {float(difference.max()):.3g} on probe rows "
                f"(tolerance {verification.tolerance:.3g} + {verification.relative_tolerance:.3g} x "
                f"|output|): the library was not built from this model")
    return None


# --- bare model ----------------------------------------------------------------------

def _load_bare(model_dir: Path) -> LoadedModel:
    predictor, objective, num_class, origin = _stock_predictor(model_dir)
    return LoadedModel(predictor, objective, num_class, predictor.num_feature, f"bare model {origin}",
                       ["no compiled artifact (manifest.json) in the model folder"])


def _stock_predictor(path: Path) -> tuple[Predictor, str, int, str]:
    """The stock predictor for the model at ``path`` (a model file, or a folder holding one):
    XGBoost (gblinear models too, which are never compiled), or Treelite's GTIL where XGBoost
    cannot load it.
    Returns (predictor, objective, num_class, where the model came from)."""
    try:
        source = load_source(path)
    except (FormatError, OSError) as exc:
        raise ModelLoadError(str(exc)) from exc
    try:
        booster = source.to_booster()
    except FormatError as xgboost_error:
        try:
            model = source.to_treelite()
        except FormatError as treelite_error:
            raise ModelLoadError(f"{xgboost_error}; {treelite_error}") from treelite_error
        predictor = GtilPredictor(model)
        description = ModelDescription.from_treelite(model)
    else:
        description = ModelDescription.from_booster(booster)
        predictor = StockPredictor(booster) if description.is_tree_ensemble else LinearPredictor(booster)
    self_test(predictor)
    return predictor, description.objective, description.num_class, source.origin


# --- checks -----------------------------------------------------------------------------

def probe_rows(num_feature: int) -> np.ndarray:
    """A few deterministic rows that walk different paths: all missing, zeros, ones,
    and spread values of both signs."""
    rng = np.random.default_rng(20261128)
    spread = rng.normal(0.0, 10.0, size=(13, num_feature))
    spread[rng.random(spread.shape) < 0.1] = np.nan
    rows = np.vstack([np.full(num_feature, np.nan), np.zeros(num_feature), np.ones(num_feature), spread])
    return np.ascontiguousarray(rows, dtype=np.float32)


def self_test(predictor: Predictor) -> None:
    """One prediction on probe rows must give one finite result per row; ModelLoadError otherwise.
    /ping only answers 200 after this passed."""
    rows = probe_rows(predictor.num_feature)
    try:
        out = predictor.predict(rows)
    except Exception as exc:   # anything the native code raises means it cannot serve
        raise ModelLoadError(f"self-test prediction with {predictor.name} failed: {exc}") from exc
    if out.shape[0] != rows.shape[0] or not np.isfinite(out).all():
        raise ModelLoadError(f"self-test prediction with {predictor.name} gave shape {out.shape} "
                             f"with non-finite values for {rows.shape[0]} rows")

