"""compile_artifact: a user's XGBoost model -> verified library -> deployable model.tar.gz.

Steps: read the source safely -> XGBoost booster (converted for legacy
formats) + Treelite model -> for this machine: the kernel library
(model_compile.codegen) and, after optional branch annotation, the TL2cgen library,
each verified against the reference, the faster one chosen (model_compile.selection);
for another architecture (``targets``): the kernel library where it compiles the
model, else TL2cgen's (a rule, CROSS_RULE: speed cannot be measured there), from the
cross compiler, verified under user-mode emulation -> crossover measurement (this
machine's library only) -> archive written under a temporary name and renamed. Nothing is written at
``output`` unless every step passed.
"""
from __future__ import annotations

import platform
import re
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from model_core.artifact import (LIBRARY_NAME, MANIFEST_NAME, MODEL_NAME, LibraryInfo, Manifest,
                                    ModelInfo, Verification, sha256_file, write_tar_atomically)
from model_compile.codegen import (ISA_NAMES, PORTABLE_ISA, KernelWalks, build_kernel_library,
                                   treelite_document, unsupported_reason)
from model_compile.compiler import CompileError, annotate_branches, build_library
from model_compile.emulate import EmulatedModel, emulator_for
from model_compile.selection import Choice, choose
from model_compile.toolchain import (Target, ToolchainError, compiler_for, cpu_options, get_target,
                                     native_target_name, target_libc)
from model_core.description import ModelDescription
from model_core.formats import FormatError, SourceModel, load_source
from model_core.runtime import CompiledModel
from model_core.machine import current_machine
from model_compile.verify import (DEFAULT_GENERATED_ROWS, DEFAULT_TOLERANCE, TOLERANCE_RULE, Comparison,
                                  VerificationError, compare, gtil_predict, measure_crossover,
                                  relative_tolerance, threshold_rows, xgboost_predict)

Progress = Callable[[str], None]


class NothingToCompile(FormatError):
    """The model has no trees (gblinear): the server serves it with XGBoost as it is."""

ENTRY_POINT = "mc_predict_dense"
GENERATORS = ("auto", "tl2cgen", "kernel")
# How ``auto`` picks the generator of another architecture's library, which cannot be
# timed here (emulation says nothing about speed): the kernel wherever it compiles the
# model, as the measurement chose on x86-64 for both sample models (docs/compile.md).
CROSS_RULE = "cross target, chosen by rule, not measured: the kernel where it compiles the model"


def read_rows_csv(path: str | Path, num_feature: int) -> np.ndarray:
    """Rows from a CSV as clients send them (no label; empty field = missing; an
    optional header line is skipped). Returns float32 (n, num_feature)."""
    path = Path(path)
    text = path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and re.search(r"[A-Za-z_]", lines[0].replace("nan", "").replace("NaN", "")):
        lines = lines[1:]   # a header of feature names
    if not lines:
        raise FormatError(f"{path}: no data rows")
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split(",")
        if len(fields) != num_feature:
            raise FormatError(f"{path}: row {number} has {len(fields)} values, the model takes {num_feature}")
        try:
            rows.append([float(f) if f.strip() else np.nan for f in fields])
        except ValueError as exc:
            raise FormatError(f"{path}: row {number}: {exc}") from exc
    return np.asarray(rows, dtype=np.float32)


def _rows(data, num_feature: int, what: str) -> np.ndarray:
    if isinstance(data, (str, Path)):
        return read_rows_csv(data, num_feature)
    X = np.ascontiguousarray(data, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != num_feature:
        raise FormatError(f"{what}: expected rows of {num_feature} features, got shape {X.shape}")
    return X


def describe_model(source: SourceModel, description: ModelDescription) -> ModelInfo:
    """The manifest's model section: the source's description, and where it came from."""
    return ModelInfo(file=MODEL_NAME, source_format=source.format, source_sha256=source.sha256,
                     objective=description.objective, num_feature=description.num_feature,
                     num_class=description.num_class, num_tree=description.num_tree,
                     feature_names=description.feature_names, base_score=description.base_score)


def _as_verification(comparison: Comparison, sample_rows: int, generated_rows: int) -> Verification:
    return Verification(reference=comparison.reference, rows=comparison.rows,
                        max_abs_diff=comparison.max_abs_diff, tolerance=comparison.tolerance,
                        worst_row=comparison.worst_row, sample_rows=sample_rows,
                        generated_rows=generated_rows, margin_max_abs_diff=comparison.margin_max_abs_diff,
                        relative_tolerance=comparison.relative_tolerance, rule=TOLERANCE_RULE)


def _labelled(comparison: Comparison, sample_rows: int) -> Comparison:
    comparison.row_labels = ["sample data row" if i < sample_rows else "generated around splits"
                             for i in range(comparison.rows)]
    return comparison


def _plan_targets(targets: list[str] | None, cpu: str) -> list[tuple[Target, str, list[str]]]:
    """(target, compiler, -mcpu options) per target, this machine's first; checked before any
    work so that a missing cross compiler or emulator fails at once. Raises CompileError."""
    names = list(targets or [native_target_name()])
    if len(set(names)) != len(names):
        raise CompileError(f"a target is named twice: {', '.join(names)}")
    try:
        chosen = sorted((get_target(name) for name in names), key=lambda t: not t.is_native)
        if cpu and not any(cpu in t.cpus for t in chosen):
            raise ToolchainError(f"--cpu {cpu} applies to none of the targets {', '.join(names)} "
                                 f"(it tunes for a Graviton generation: add --target linux-aarch64)")
        plan = []
        for target in chosen:
            compiler = compiler_for(target)
            if not target.is_native:
                emulator_for(target)
            plan.append((target, compiler, cpu_options(target, cpu, compiler) if cpu in target.cpus else []))
    except ToolchainError as exc:
        raise CompileError(str(exc)) from exc
    return plan


def _kernel_deferral(generator: str, doc) -> str | None:
    """Why the kernel generator does not compile this model (None: it does); a CompileError
    when the user asked for that generator alone."""
    deferred = unsupported_reason(doc)
    if deferred and generator == "kernel":
        raise CompileError(f"the kernel generator does not compile this model: {deferred}")
    return deferred


def _library_file(index: int, target: Target, cpu: str) -> str:
    """model.so for the first library (what readers of one library load), then model-TARGET[-CPU].so."""
    return LIBRARY_NAME if index == 0 else f"model-{target.name}{'-' + cpu if cpu else ''}.so"


def _resolve_output(output: str | Path) -> Path:
    output = Path(output)
    if output.is_dir():
        output = output / "model.tar.gz"
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FormatError(f"cannot create the output folder {output.parent}: {exc.strerror}") from exc
    return output


def compile_artifact(source: str | Path | SourceModel, output: str | Path, *, sample_data=None,
                     quantize: bool = True, annotate: bool | str | Path = False,
                     parallel_comp: int | None = None, progress: Progress | None = None,
                     tolerance: float = DEFAULT_TOLERANCE, relative: float | None = None,
                     generated_rows: int = DEFAULT_GENERATED_ROWS,
                     measure_speed: bool = True, generator: str = "auto",
                     targets: list[str] | None = None, cpu: str = "") -> Manifest:
    """Compile ``source`` into a verified, deployable ``output`` (a model.tar.gz path,
    or a folder to write model.tar.gz into).

    ``source``: model.tar.gz, folder or model file (or a SourceModel).
    ``sample_data``: CSV path or float array of rows to verify on (added to
    ``generated_rows`` rows made around the split thresholds). ``annotate``: True
    to count branches on the sample data, or a CSV path of rows to count them on.
    ``parallel_comp``: C files to split the trees into (None = from tree count).
    ``tolerance``, ``relative``: each output may differ from the reference by
    tolerance + relative x |reference| (relative None: trees per output x
    float32 epsilon, see ``verify.relative_tolerance``; 0: absolute only).
    ``progress``: called with one line of text per step. ``measure_speed``: measure
    the crossover batch size (False leaves it None: compiled always used).
    ``generator``: ``"auto"`` (build TL2cgen's and the kernel's library, verify both,
    ship the faster; TL2cgen alone where the kernel does not support the model),
    ``"tl2cgen"`` or ``"kernel"`` (that one only; CompileError where it cannot).
    ``quantize``, ``annotate`` and ``parallel_comp`` are TL2cgen's options.
    ``targets``: target names (``linux-x86_64``, ``linux-aarch64``; default this
    machine's), one library each; another architecture's is cross-compiled and
    verified under emulation, its generator chosen by rule (``auto``: the kernel
    where it compiles the model, else TL2cgen; see CROSS_RULE). ``cpu``: tune the
    targets that know it for one Graviton generation (``neoverse-n1``/``-v1``/``-v2``).
    Returns the Manifest written. Raises FormatError (NothingToCompile for a
    gblinear model), CompileError or VerificationError (nothing written then).
    """
    say = progress or (lambda message: None)
    if generator not in GENERATORS:
        raise ValueError(f"generator must be one of {', '.join(GENERATORS)}, not {generator!r}")
    started = time.perf_counter()
    plan = _plan_targets(targets, cpu)
    native = plan[0] if plan[0][0].is_native else None
    output = _resolve_output(output)
    if not isinstance(source, SourceModel):
        say(f"reading {source}")
        source = load_source(source)
    say(f"{source.origin}: {source.format} model, sha256 {source.sha256[:12]}")

    booster = source.to_booster()
    description = ModelDescription.from_booster(booster)
    if not description.is_tree_ensemble:
        raise NothingToCompile(f"{source.origin}: a {description.booster} model is a linear model (one "
                               f"dot product per row), not trees: there is nothing to compile. Deploy the "
                               f"model as it is; the server predicts it with stock XGBoost")
    info = describe_model(source, description)
    say(f"objective {info.objective}, {info.num_tree} trees, {info.num_feature} features"
        + (f", {info.num_class} classes" if info.num_class > 1 else ""))
    tl_model = source.to_treelite()
    if relative is None:
        relative = relative_tolerance(info.num_tree, info.num_class)

    sample = None if sample_data is None else _rows(sample_data, info.num_feature, "sample data")
    generated = threshold_rows(description.split_thresholds, info.num_feature, generated_rows)
    X = generated if sample is None else np.concatenate([sample, generated])
    n_sample = 0 if sample is None else sample.shape[0]

    conversion = None
    if not source.is_native:
        say(f"checking the converted model ({MODEL_NAME}) against Treelite on the original")
        check = compare(xgboost_predict(booster, X, info.objective), gtil_predict(tl_model, X),
                        candidate_name="converted model (XGBoost)", reference_name="original model (GTIL)",
                        tolerance=tolerance, relative=relative)
        if not check.passed:
            raise VerificationError("conversion failed: " + _labelled(check, n_sample).describe_worst(X))
        conversion = _as_verification(check, n_sample, generated.shape[0])

    with tempfile.TemporaryDirectory(prefix=".mc-", dir=output.parent) as tmp:
        tmp = Path(tmp)
        reference = "xgboost" if source.is_native else "gtil"
        say(f"verifying on {X.shape[0]} rows ({n_sample} sample, {generated.shape[0]} generated) "
            f"against {'XGBoost' if reference == 'xgboost' else 'Treelite GTIL'}")
        ref_out = (xgboost_predict(booster, X, info.objective) if reference == "xgboost"
                   else gtil_predict(tl_model, X))
        ref_margin = (xgboost_predict(booster, X, info.objective, margin=True) if reference == "xgboost"
                      else gtil_predict(tl_model, X, margin=True))

        def verified(predicted: np.ndarray, margins: np.ndarray, name: str, where: str = "") -> Comparison:
            result = compare(predicted, ref_out, candidate_name=name,
                             reference_name=reference, tolerance=tolerance, relative=relative)
            result.margin_max_abs_diff = compare(margins, ref_margin,
                                                 candidate_name=name, reference_name=reference,
                                                 tolerance=tolerance, relative=relative).max_abs_diff
            if not result.passed:
                raise VerificationError(where + _labelled(result, n_sample).describe_worst(X))
            say(f"verified {name}: max abs difference {result.max_abs_diff:.3g} "
                f"(margins {result.margin_max_abs_diff:.3g}), tolerance {tolerance:g} + {relative:.3g} x |output|")
            return result

        def verified_here(compiled: CompiledModel, name: str) -> Comparison:
            return verified(compiled.predict(X), compiled.predict(X, margin=True), name)

        def verify_other_walks(walks: KernelWalks) -> None:
            """The kernel library's walks this CPU has besides the one it chose, on the same rows."""
            for isa, walk in ISA_NAMES.items():
                out = None if isa == walks.chosen else walks.predict(X, isa)
                if out is not None:
                    verified(out, walks.predict(X, isa, margin=True), f"compiled (kernel), {walk} walk")

        def verified_emulated(libpath: Path, target: Target, compiler: str, name: str):
            """(how it ran, Comparison, the kernel walk that ran or None) for another target's library."""
            try:
                runner = EmulatedModel(libpath, target, compiler, info.num_feature)
            except ToolchainError as exc:
                raise CompileError(str(exc)) from exc
            where = f"{target.name} library ({runner.method}): "
            say(f"verifying the {target.name} library, {runner.method}")
            try:
                predicted, margins = runner.predict(X), runner.predict(X, margin=True)
                chosen = runner.kernel_isa
                result = verified(predicted, margins, name, where)
                # A kernel library also holds the portable walk, which a CPU without the
                # vector unit would run: verified too, on the same rows.
                if chosen is not None and chosen != PORTABLE_ISA:
                    verified(runner.predict(X, isa=PORTABLE_ISA), runner.predict(X, margin=True, isa=PORTABLE_ISA),
                             f"{name}, portable walk", where)
            except VerificationError:
                raise
            except RuntimeError as exc:   # the library crashed or failed under emulation
                raise VerificationError(f"{where}{exc}") from exc
            finally:
                runner.close()
            return runner.method, result, chosen

        annotation = None
        if annotate and generator != "kernel":
            rows = sample if annotate is True else _rows(annotate, info.num_feature, "annotation data")
            if rows is None:
                raise FormatError("annotate=True needs sample data to count branches on")
            say(f"annotating branches on {rows.shape[0]} rows")
            annotation = tmp / "annotation.json"
            annotate_branches(tl_model, rows, annotation)

        doc = None          # Treelite's document of the model, for the kernel generator
        libraries: list[LibraryInfo] = []
        results: list[Comparison] = []
        compiled = None     # this machine's library, for the crossover measurement
        if native is not None:
            target, compiler, options = native
            # Candidates: generator -> (build, loaded library, verification).
            candidates: dict[str, tuple] = {}
            deferred = None
            if generator in ("auto", "kernel"):
                doc = doc or treelite_document(tl_model)
                deferred = _kernel_deferral(generator, doc)
                if deferred:
                    say(f"kernel generator: not for this model ({deferred}): TL2cgen compiles it")
                else:
                    say("generating the kernel library (compact node arrays)")
                    try:
                        kbuild = build_kernel_library(doc, tmp / "kernel.so")
                    except RuntimeError as exc:
                        raise CompileError(f"the kernel library did not compile: {exc}") from exc
                    say(f"kernel library compiled in {kbuild.seconds:.1f} s: "
                        f"{kbuild.path.stat().st_size / 1e6:.2f} MB")
                    kernel = CompiledModel(kbuild.path)
                    try:
                        checked = verified_here(kernel, "compiled (kernel)")
                        verify_other_walks(KernelWalks(kbuild.path, info.num_feature, kernel.output_width))
                        candidates["kernel"] = (kbuild, kernel, checked)
                    except VerificationError as exc:
                        if generator == "kernel":
                            raise
                        deferred = f"failed verification: {exc}"
                        say(f"kernel library dropped, {deferred}")
            if generator in ("auto", "tl2cgen"):
                say(f"generating C code with TL2cgen ({'quantized' if quantize else 'not quantized'})")
                build = build_library(tl_model, tmp / "tl2cgen.so", description=description, quantize=quantize,
                                      parallel_comp=parallel_comp, annotation=annotation, toolchain=compiler,
                                      options=options, progress=say)
                say(f"compiled in {build.seconds:.1f} s: {build.path.stat().st_size / 1e6:.2f} MB")
                stock = CompiledModel(build.path)
                try:
                    candidates["tl2cgen"] = (build, stock, verified_here(stock, "compiled"))
                except VerificationError:
                    if not candidates:
                        raise
                    say("TL2cgen library dropped: it failed verification")

            if len(candidates) == 2:
                say("timing the two libraries (1 thread) to choose one")
                choice = choose(candidates["kernel"][1], candidates["tl2cgen"][1], X)
            else:
                (only,) = candidates
                choice = Choice(only, f"generator {only!r} requested" if generator != "auto"
                                else f"the only verified library ({deferred or 'TL2cgen dropped'})")
            say(f"library: {choice.generator} ({choice.reason})")
            build, compiled, result = candidates[choice.generator]
            libpath = tmp / LIBRARY_NAME
            shutil.copyfile(build.path, libpath)
            libraries.append(LibraryInfo(
                file=LIBRARY_NAME, sha256=sha256_file(libpath), platform=target.platform,
                libc=current_machine()["libc"], compiler=build.compiler, params=build.params, flags=build.flags,
                entry_point=ENTRY_POINT if compiled.backend == "direct" else None,
                generator=choice.generator, generator_choice=choice.to_dict(), target=target.name,
                cpu=cpu if options else "", verified_by="native", max_abs_diff=result.max_abs_diff))
            results.append(result)

        for target, compiler, options in plan[1 if native else 0:]:
            # Another architecture: the generator is chosen by rule, not measured
            # (emulation says nothing about speed); see CROSS_RULE.
            tuned = cpu if options else ""
            index = len(libraries)
            libpath = tmp / _library_file(index, target, tuned)
            for_whom = f"{target.name}{' tuned for ' + cpu if tuned else ''}"
            built = None
            reason = f"generator {generator!r} requested"
            if generator in ("auto", "kernel"):
                doc = doc or treelite_document(tl_model)
                deferred = _kernel_deferral(generator, doc)
                if deferred:
                    say(f"kernel generator: not for this model ({deferred}): TL2cgen compiles it for {target.name}")
                    reason = f"{CROSS_RULE}; the kernel does not compile this model: {deferred}"
                else:
                    say(f"generating the kernel library for {for_whom}")
                    try:
                        kbuild = build_kernel_library(doc, libpath, toolchain=compiler, options=options)
                    except RuntimeError as exc:
                        raise CompileError(f"the {target.name} kernel library did not compile: {exc}") from exc
                    say(f"kernel library compiled in {kbuild.seconds:.1f} s: {libpath.stat().st_size / 1e6:.2f} MB")
                    try:
                        built = ("kernel", kbuild, *verified_emulated(libpath, target, compiler, "compiled (kernel)"))
                        reason = ("generator 'kernel' requested" if generator == "kernel" else
                                  f"{CROSS_RULE}; it compiles this model")
                    except VerificationError as exc:
                        if generator == "kernel":
                            raise
                        say(f"{target.name} kernel library dropped, failed verification: {exc}")
                        reason = f"{CROSS_RULE}; the kernel library failed verification: {exc}"
            if built is None:
                say(f"generating C code for {for_whom} with TL2cgen ({'quantized' if quantize else 'not quantized'})")
                build = build_library(tl_model, libpath, description=description, quantize=quantize,
                                      parallel_comp=parallel_comp, annotation=annotation, toolchain=compiler,
                                      options=options, progress=say)
                say(f"compiled in {build.seconds:.1f} s: {libpath.stat().st_size / 1e6:.2f} MB")
                built = ("tl2cgen", build, *verified_emulated(libpath, target, compiler, "compiled"))
            name, build, method, result, ran = built
            # A kernel library names the walk that ran under emulation (the one it chose at load).
            params = {**build.params, **({"isa": ISA_NAMES.get(ran, ran)} if ran is not None else {})}
            say(f"{target.name} library: {name} ({reason})")
            libraries.append(LibraryInfo(
                file=libpath.name, sha256=sha256_file(libpath), platform=target.platform,
                libc=target_libc(compiler), compiler=build.compiler, params=params, flags=build.flags,
                entry_point=ENTRY_POINT, generator=name, generator_choice=Choice(name, reason).to_dict(),
                target=target.name, cpu=tuned, verified_by=method, max_abs_diff=result.max_abs_diff))
            results.append(result)
        result = max(results, key=lambda r: r.max_abs_diff)
        result.margin_max_abs_diff = max(r.margin_max_abs_diff for r in results)

        crossover = None
        timings: list[dict] = []
        if measure_speed and compiled is None:
            say("crossover not measured: no library for this machine (emulation says nothing about speed)")
        elif measure_speed:
            say("measuring the crossover batch size (compiled vs XGBoost inplace_predict, 1 thread)")
            measured = measure_crossover(compiled, booster, X)
            crossover, timings = measured.batch_size, measured.timings
            say("crossover: " + (f"XGBoost is faster from {crossover} rows per call" if crossover
                                 else "the compiled library was faster at every size tried"))

        model_path = tmp / MODEL_NAME
        model_path.write_bytes(source.to_ubjson())
        machine = current_machine()
        import tl2cgen
        import treelite
        import xgboost

        manifest = Manifest(
            model=info,
            library=libraries[0],
            other_libraries=libraries[1:],
            verification=_as_verification(result, n_sample, generated.shape[0]),
            versions={"treelite": treelite.__version__, "tl2cgen": tl2cgen.__version__,
                      "xgboost": xgboost.__version__, "numpy": np.__version__,
                      "python": platform.python_version()},
            crossover_batch_size=crossover,
            compile_seconds=round(time.perf_counter() - started, 2),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            conversion=conversion,
            crossover_timings=timings,
            compiled_on=machine,
        )
        manifest_path = tmp / MANIFEST_NAME
        manifest_path.write_text(manifest.to_json())
        write_tar_atomically({MANIFEST_NAME: manifest_path, MODEL_NAME: model_path,
                              **{lib.file: tmp / lib.file for lib in libraries}}, output)
    say(f"wrote {output} in {manifest.compile_seconds:.1f} s")
    return manifest
