"""Treelite model -> TL2cgen C code (+ our batch entry point) -> shared library."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from model_compile.target import DEFAULT_TOOLCHAIN, compiler_version

Progress = Callable[[str], None]

# gcc's flags as TL2cgen's gcc driver runs them (recorded in the manifest);
# OPTIONS are ours, added to both the compile and the link command.
TL2CGEN_FLAGS = ["-O3", "-fPIC", "-std=c99"]
OPTIONS: list[str] = []
# One C file per ~TREES_PER_FILE trees: small enough that gcc -O3 never chews
# on one huge function (9 minutes for 300 deep trees in one file), large
# enough that process start-up does not dominate.
TREES_PER_FILE = 16
MAX_FILES = 64
HEARTBEAT_SECONDS = 15.0


class CompileError(RuntimeError):
    """Code generation or the C compiler failed; the message says where."""


@dataclass
class LibraryBuild:
    path: Path
    params: dict          # TL2cgen export params, as recorded in the manifest
    compiler: str         # e.g. "gcc 12.2.0"
    flags: list[str]
    seconds: float


def choose_parallel_comp(num_tree: int) -> int:
    """Number of C files to split ``num_tree`` trees into (0 = one file)."""
    if num_tree <= TREES_PER_FILE:
        return 0
    return min(MAX_FILES, math.ceil(num_tree / TREES_PER_FILE))


def _add_batch_entry_point(src: Path) -> None:
    """Add batch_predict.c to the generated sources and to TL2cgen's build recipe."""
    header = (src / "header.h").read_text()
    if "float fvalue;" not in header or "float* result" not in header:
        raise CompileError("generated code is not float32 in and out; only float32 models are supported")
    code = resources.files("model_compile").joinpath("batch_predict.c").read_text()
    (src / "mc_batch.c").write_text(code)
    recipe_path = src / "recipe.json"
    recipe = json.loads(recipe_path.read_text())
    recipe["sources"].append({"name": "mc_batch", "length": code.count("\n")})
    recipe_path.write_text(json.dumps(recipe, indent=2))


def model_thresholds(model) -> dict[int, np.ndarray]:
    """``{feature: sorted unique float32 thresholds}`` of a treelite model's numerical splits."""
    found: dict[int, set] = {}
    for tree in json.loads(model.dump_as_json(pretty_print=False))["trees"]:
        for node in tree["nodes"]:
            if node.get("node_type") == "numerical_test_node":
                found.setdefault(int(node["split_feature_id"]), set()).add(np.float32(node["threshold"]))
    return {f: np.array(sorted(v), dtype=np.float32) for f, v in found.items()}


def _c_int_array(source: str, name: str) -> list[int]:
    match = re.search(rf"\b{name}\[\]\s*=\s*\{{(.*?)\}};", source, re.S)
    if not match:
        raise CompileError(f"quantize.c has no {name}[] table: unexpected TL2cgen output")
    return [int(v) for v in match.group(1).replace("\n", " ").split(",") if v.strip()]


def _exact_quantize_thresholds(src: Path, model) -> int:
    """Rewrite quantize.c's threshold table with exact (hex) float32 literals.

    TL2cgen 1.0.0 prints that table with 8 significant digits; float32 needs 9,
    so a few thresholds land one step off and inputs exactly at or next to them
    fall into the wrong bin (measured: 67 of 6,651 thresholds of rtb-large, a
    0.03 error on a probability). Returns how many literals were corrected.
    """
    path = src / "quantize.c"
    code = path.read_text()
    begin, length = _c_int_array(code, "th_begin"), _c_int_array(code, "th_len")
    match = re.search(r"(static const float threshold\[\]\s*=\s*\{)(.*?)(\};)", code, re.S)
    if not match:
        raise CompileError("quantize.c has no threshold[] table: unexpected TL2cgen output")
    printed = np.array([np.float32(float(v)) for v in match.group(2).split(",") if v.strip()],
                       dtype=np.float32)
    exact = printed.copy()
    thresholds = model_thresholds(model)
    for feature, (start, n) in enumerate(zip(begin, length)):
        values = thresholds.get(feature, np.zeros(0, dtype=np.float32))
        if n != values.size:
            raise CompileError(f"quantize.c lists {n} thresholds for feature {feature}, the model has "
                               f"{values.size}: unexpected TL2cgen output")
        off = printed[start:start + n]
        # Printed values are the exact ones rounded to 8 digits: a relative 1e-7 apart at most.
        if n and not np.allclose(off, values, rtol=1e-6, atol=0):
            raise CompileError(f"quantize.c thresholds of feature {feature} do not match the model")
        exact[start:start + n] = values
    literals = ", ".join(_c_float(v) for v in exact)
    path.write_text(code[:match.start(2)] + "\n  " + literals + ",\n" + code[match.end(2):])
    return int(np.sum(exact != printed))


def _c_float(value: np.float32) -> str:
    """An exact C literal for a float32 (hex float; math.h names for the infinities)."""
    if np.isinf(value):
        return "INFINITY" if value > 0 else "-INFINITY"
    return float(value).hex()


def _heartbeat(progress: Progress | None, what: str, stop: threading.Event) -> None:
    started = time.perf_counter()
    while not stop.wait(HEARTBEAT_SECONDS):
        if progress:
            progress(f"  ... {what}: {time.perf_counter() - started:.0f} s")


@contextlib.contextmanager
def _native_output():
    """Capture what native code and TL2cgen's log callback print (stdout and stderr)
    into a list of lines, so that it reaches the user through ``progress``."""
    lines: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(1), os.dup(2)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(io.StringIO()) as py_out:
                yield lines
        finally:
            sys.stdout.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace") + py_out.getvalue()
            lines.extend(line for line in text.splitlines() if line.strip())


def _report_native(lines: list[str], progress: Progress | None) -> None:
    # Drop the "[hh:mm:ss] /path/file.cc:123: " prefix native log lines carry.
    for line in lines:
        if progress and "Parallel compilation" not in line:
            progress("  tl2cgen: " + re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", line))


def annotate_branches(model, rows: np.ndarray, path: Path) -> None:
    """Count how often each branch is taken on ``rows`` (float32, NaN = missing) into ``path``."""
    import tl2cgen

    dmat = tl2cgen.DMatrix(np.ascontiguousarray(rows, dtype=np.float32), dtype="float32")
    tl2cgen.annotate_branch(model, dmat, str(path), nthread=os.cpu_count() or 1, verbose=False)


def build_library(model, libpath: Path, *, num_tree: int, quantize: bool = True,
                  parallel_comp: int | None = None, annotation: Path | None = None,
                  toolchain: str = DEFAULT_TOOLCHAIN, progress: Progress | None = None) -> LibraryBuild:
    """Generate C code for the treelite ``model`` and compile it into ``libpath``.

    ``parallel_comp``: None chooses from ``num_tree``; 0 = one C file.
    ``annotation``: a file written by :func:`annotate_branches` (branch hints).
    Returns what was built and how. Raises CompileError.
    """
    import tl2cgen

    compiler = compiler_version(toolchain)
    if parallel_comp is None:
        parallel_comp = choose_parallel_comp(num_tree)
    params: dict = {"quantize": int(bool(quantize))}
    if parallel_comp:
        params["parallel_comp"] = int(parallel_comp)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mc-src-") as tmp:
        src = Path(tmp) / "src"
        gen_params = dict(params)
        if annotation is not None:
            gen_params["annotate_in"] = str(annotation)
        try:
            with warnings.catch_warnings(), _native_output() as native:
                warnings.simplefilter("ignore")
                tl2cgen.generate_c_code(model, str(src), gen_params, verbose=False)
        except Exception as exc:  # TL2cgen raises its own error types
            raise CompileError(f"TL2cgen could not generate C code: {exc}") from exc
        _report_native(native, progress)
        if quantize:
            fixed = _exact_quantize_thresholds(src, model)
            if progress and fixed:
                progress(f"  corrected {fixed} quantization thresholds TL2cgen printed with too few digits")
        _add_batch_entry_point(src)
        n_files = len(list(src.glob("*.c")))
        if progress:
            progress(f"compiling {n_files} C files with {compiler} {' '.join(TL2CGEN_FLAGS + OPTIONS)} ...")
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(progress, "compiling", stop), daemon=True)
        beat.start()
        try:
            built = tl2cgen.create_shared(toolchain, str(src), nthread=os.cpu_count() or 1,
                                          options=OPTIONS or None, long_build_time_warning=False)
        except Exception as exc:
            raise CompileError(f"the C compiler failed: {exc}") from exc
        finally:
            stop.set()
            beat.join()
        shutil.move(str(built), str(libpath))
    if annotation is not None:
        params["annotate"] = True
    return LibraryBuild(path=Path(libpath), params=params, compiler=compiler,
                        flags=TL2CGEN_FLAGS + OPTIONS, seconds=time.perf_counter() - started)
