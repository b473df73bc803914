"""``model-compile INPUT -o OUTPUT [options]`` (also ``python -m model_compile``).

Progress goes to stderr, the summary to stdout. Exit status: 0 compiled and
verified; 1 verification failed (the message names the worst row and both
values); 2 bad input or options; 3 the C compiler failed; 4 nothing to compile
(a gblinear model: the server predicts it with stock XGBoost as it is).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_VERIFY, EXIT_INPUT, EXIT_COMPILER, EXIT_NOTHING_TO_COMPILE = 0, 1, 2, 3, 4


def _zero_or_more(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    from model_compile.verify import DEFAULT_GENERATED_ROWS, DEFAULT_TOLERANCE

    parser = argparse.ArgumentParser(
        prog="model-compile",
        description="Compile an XGBoost model into a native library with Treelite + TL2cgen, verify "
                    "it against XGBoost, and write a deployable SageMaker model.tar.gz (library + "
                    "model.ubj + manifest.json).",
        epilog="Formats (detected from the bytes): XGBoost JSON, UBJSON, the legacy binary of "
               "0.72-1.x (with or without 'binf') and the pickled Booster SageMaker's 0.90 and 1.x "
               "containers wrote (read without executing it). "
               "Exit status: 0 ok, 1 verification failed, 2 bad input, 3 compiler failed, 4 nothing to "
               "compile (gblinear: deploy it as it is, the server predicts it with XGBoost).")
    parser.add_argument("input", type=Path, metavar="INPUT",
                        help="a SageMaker model.tar.gz, a folder holding the model, or a model file")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTPUT",
                        help="where to write the deployable model.tar.gz (a file name, or an existing "
                             "folder to write model.tar.gz into; missing folders are created); written "
                             "only if verification passes")
    parser.add_argument("--sample-data", type=Path, metavar="ROWS.csv",
                        help="CSV rows (no label, empty field = missing, optional header) to verify on, "
                             f"in addition to {DEFAULT_GENERATED_ROWS} rows generated around the model's "
                             "split thresholds")
    parser.add_argument("--annotate-data", type=Path, metavar="ROWS.csv",
                        help="CSV rows of typical traffic: count how often each branch is taken and "
                             "compile the counts in as branch-prediction hints (about 10%% faster)")
    parser.add_argument("--no-quantize", dest="quantize", action="store_false",
                        help="compare raw float thresholds instead of quantized bin indices "
                             "(quantized is smaller and faster; both are verified)")
    parser.add_argument("--parallel-comp", type=_zero_or_more, metavar="N",
                        help="split the trees into N C files compiled in parallel (0 = one file; "
                             "default: one file per 16 trees, at most 64)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="ABS",
                        help=f"absolute part of the difference allowed on each transformed output "
                             f"(default {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--relative-tolerance", type=float, default=None, metavar="REL",
                        help="part of |XGBoost's output| allowed on top of --tolerance (default: trees "
                             "per output x 2**-23, what float32 sums in another order can differ by; "
                             "0 = --tolerance alone)")
    parser.add_argument("--verify-rows", type=_zero_or_more, default=DEFAULT_GENERATED_ROWS, metavar="N",
                        help=f"rows to generate around the split thresholds (default {DEFAULT_GENERATED_ROWS})")
    parser.add_argument("--no-crossover", dest="measure_speed", action="store_false",
                        help="skip measuring the batch size from which stock XGBoost is faster "
                             "(a few seconds); the server then always uses the compiled library")
    parser.add_argument("--generator", choices=("auto", "tl2cgen", "kernel"), default="auto",
                        help="code generator: auto (default) builds both, verifies both and ships the "
                             "faster on this machine (for another architecture, which cannot be timed here: "
                             "the kernel where it compiles the model); tl2cgen or kernel builds that one only")
    from model_compile.toolchain import TARGETS, native_target_name

    cpus = sorted({cpu for target in TARGETS.values() for cpu in target.cpus})
    parser.add_argument("--target", dest="targets", action="append", choices=sorted(TARGETS),
                        metavar="TARGET",
                        help=f"platform to compile for: {', '.join(sorted(TARGETS))} (default: this "
                             f"machine's, {native_target_name()}); repeat for one library per target in "
                             "the same artifact (the server loads the one for its machine). Another "
                             "architecture is cross-compiled and verified under qemu user-mode emulation")
    parser.add_argument("--cpu", default="", choices=cpus, metavar="CPU",
                        help="tune the linux-aarch64 library for one Graviton generation: neoverse-n1 "
                             "(Graviton2), neoverse-v1 (Graviton3), neoverse-v2 (Graviton4); the server "
                             "refuses it on an older CPU (default: any arm64 CPU)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary and errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from model_core.artifact import ArtifactError
    from model_compile.compiler import CompileError
    from model_core.formats import FormatError
    from model_compile.pipeline import NothingToCompile, compile_artifact
    from model_compile.verify import VerificationError

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        manifest = compile_artifact(
            args.input, args.output, sample_data=args.sample_data, quantize=args.quantize,
            annotate=args.annotate_data or False, parallel_comp=args.parallel_comp,
            progress=None if args.quiet else progress, tolerance=args.tolerance,
            relative=args.relative_tolerance,
            generated_rows=args.verify_rows, measure_speed=args.measure_speed,
            generator=args.generator, targets=args.targets, cpu=args.cpu)
    except VerificationError as exc:
        print(f"model-compile: verification FAILED, nothing written: {exc}", file=sys.stderr)
        return EXIT_VERIFY
    except CompileError as exc:
        print(f"model-compile: {exc}", file=sys.stderr)
        return EXIT_COMPILER
    except NothingToCompile as exc:
        print(f"model-compile: nothing written: {exc}", file=sys.stderr)
        return EXIT_NOTHING_TO_COMPILE
    except (FormatError, ArtifactError, OSError) as exc:
        print(f"model-compile: {exc}", file=sys.stderr)
        return EXIT_INPUT

    m = manifest
    output = args.output / "model.tar.gz" if args.output.is_dir() else args.output
    print(f"{output}: {m.model.objective}, {m.model.num_tree} trees, {m.model.num_feature} features, "
          f"from {m.model.source_format}")
    for lib in m.libraries:
        print(f"  library {lib.file}: {lib.platform}{' -mcpu ' + lib.cpu if lib.cpu else ''} {lib.libc}, "
              f"{lib.compiler}, params {lib.params}, verified {lib.verified_by}")
        print(f"    generator {lib.generator}: {lib.generator_choice.get('reason', '')}")
    print(f"  verified on {m.verification.rows} rows against {m.verification.reference}: "
          f"max abs diff {m.verification.max_abs_diff:.3g} (tolerance {m.verification.tolerance:g} "
          f"+ {m.verification.relative_tolerance:.3g} x |output|)")
    if m.conversion:
        print(f"  converted model.ubj vs original (GTIL): max abs diff {m.conversion.max_abs_diff:.3g}")
    if m.crossover_timings:
        print("  crossover: " + (f"XGBoost faster from {m.crossover_batch_size} rows per call"
                                 if m.crossover_batch_size else "compiled faster at every size tried"))
    print(f"  compiled in {m.compile_seconds:.1f} s")
    return EXIT_OK
