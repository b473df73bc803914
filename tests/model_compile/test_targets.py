"""Compile targets: arm64 (Graviton) libraries cross-compiled here and verified under
qemu user-mode emulation, several targets in one artifact, and the errors for a missing
cross compiler or emulator. Needs `make tools` (gcc-aarch64-linux-gnu, qemu-user-static)."""
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import treelite
import xgboost as xgb

from model_compile import compile_artifact
from model_compile.codegen import ISA_NAMES, build_kernel_library, treelite_document
from model_compile.emulate import EmulatedModel
from model_compile.toolchain import TARGETS
from model_compile.verify import threshold_rows, xgboost_predict
from model_core.description import ModelDescription
from model_compile.cli import EXIT_COMPILER, EXIT_INPUT
from model_compile.compiler import CompileError
from model_compile.verify import VerificationError
from model_core.artifact import read_manifest, safe_extract, sha256_file
from model_core.machine import current_machine
from model_core.runtime import CompiledModel
from tests.conftest import train_small

ELF_MACHINE = {62: "x86_64", 183: "aarch64"}    # e_machine: EM_X86_64, EM_AARCH64


def elf_machine(path) -> str:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    return ELF_MACHINE.get(int.from_bytes(header[18:20], "little"), "other")


def reference(sample_model_dir, name):
    folder = sample_model_dir(name)
    with tarfile.open(folder / "model.tar.gz") as tar:
        booster = xgb.Booster()
        booster.load_model(bytearray(tar.extractfile("xgboost-model").read()))
    X = np.genfromtxt(folder / "sample.csv", delimiter=",", dtype=np.float32)
    return folder, booster, X


@pytest.fixture(scope="module")
def both_targets(sample_model_dir, tmp_path_factory):
    """rtb-small for arm64 tuned for Graviton4 and for this machine, in one artifact
    (arm64 named first: this machine's library still comes first)."""
    folder = sample_model_dir("rtb-small")
    out = tmp_path_factory.mktemp("two-targets")
    manifest = compile_artifact(folder / "model.tar.gz", out / "model.tar.gz", sample_data=folder / "sample.csv",
                                targets=["linux-aarch64", "linux-x86_64"], cpu="neoverse-v2",
                                measure_speed=False)
    safe_extract(out / "model.tar.gz", out / "model")
    return manifest, out / "model"


def test_one_artifact_carries_a_verified_library_per_target(both_targets):
    manifest, folder = both_targets
    assert read_manifest(folder) == manifest
    native, arm = manifest.libraries
    assert (native.file, native.target, native.platform) == ("model.so", "linux-x86_64", "linux_x86_64")
    assert native.verified_by == "native" and native.cpu == "" and native.libc == current_machine()["libc"]
    assert (arm.file, arm.target, arm.platform) == ("model-linux-aarch64-neoverse-v2.so", "linux-aarch64",
                                                    "linux_aarch64")
    assert elf_machine(folder / native.file) == "x86_64" and elf_machine(folder / arm.file) == "aarch64"
    assert sha256_file(folder / arm.file) == arm.sha256
    assert arm.compiler.startswith("aarch64-linux-gnu-gcc ") and arm.libc.startswith("glibc 2.")
    # gcc 12 knows Graviton4's core as "demeter", later ones as neoverse-v2.
    assert arm.cpu == "neoverse-v2" and ({"-mcpu=neoverse-v2", "-mcpu=demeter"} & set(arm.flags))
    assert arm.verified_by.startswith("emulated: qemu-aarch64") and "linux_x86_64" in arm.verified_by
    assert arm.entry_point == "mc_predict_dense"
    for lib in manifest.libraries:
        assert 0 <= lib.max_abs_diff <= 1e-5
    assert manifest.verification.max_abs_diff == max(lib.max_abs_diff for lib in manifest.libraries)


@pytest.mark.parametrize("name, cpu, generator", [("rtb-small", "", "auto"), ("rtb-large", "neoverse-v1", "auto"),
                                                ("rtb-small", "neoverse-n1", "tl2cgen")])
def test_sample_models_compile_for_arm64_and_verify_under_emulation(sample_model_dir, tmp_path, name, cpu,
                                                                     generator):
    folder, booster, X = reference(sample_model_dir, name)
    lines = []
    manifest = compile_artifact(folder / "model.tar.gz", tmp_path / "model.tar.gz",
                                sample_data=folder / "sample.csv", targets=["linux-aarch64"], cpu=cpu,
                                progress=lines.append, generator=generator)
    lib = manifest.library
    if generator == "auto":   # not timed under emulation: the kernel by rule, its NEON walk verified
        assert lib.generator == "kernel" and lib.params["isa"] == "neon"
        assert "chosen by rule, not measured" in lib.generator_choice["reason"]
    else:
        assert lib.generator == "tl2cgen" and "isa" not in lib.params
    assert manifest.other_libraries == [] and lib.platform == "linux_aarch64" and lib.cpu == cpu
    assert lib.verified_by.startswith("emulated: qemu-aarch64")
    assert manifest.verification.rows == 4000 and manifest.verification.max_abs_diff <= 1e-5
    # Emulation measures nothing about speed: no crossover, and the log says why.
    assert manifest.crossover_batch_size is None and manifest.crossover_timings == []
    assert any("crossover not measured" in line for line in lines)
    safe_extract(tmp_path / "model.tar.gz", tmp_path / "model")
    assert elf_machine(tmp_path / "model" / "model.so") == "aarch64"
    with pytest.raises(OSError):    # really another architecture's code: this process cannot load it
        CompiledModel(tmp_path / "model" / "model.so")


def test_a_failure_under_emulation_reads_as_a_native_one(sample_model_dir, tmp_path):
    """Tolerance 0: both TL2cgen libraries are off XGBoost by float rounding, and both compiles
    fail with the same message, the emulated one saying which library and how it ran. (TL2cgen's
    on both: the kernel library, which adds leaves in XGBoost's order, would pass here.)"""
    folder = sample_model_dir("rtb-small")
    failures = {}
    for target in ("linux-x86_64", "linux-aarch64"):
        with pytest.raises(VerificationError) as caught:
            compile_artifact(folder / "model.tar.gz", tmp_path / target, sample_data=folder / "sample.csv",
                             targets=[target], tolerance=0.0, relative=0.0, measure_speed=False,
                             generator="tl2cgen")
        failures[target] = str(caught.value)
    prefix, _, rest = failures["linux-aarch64"].partition("): ")
    assert prefix.startswith("linux-aarch64 library (emulated: qemu-aarch64")
    assert rest == failures["linux-x86_64"] and "row" in rest
    assert not list(tmp_path.rglob("*.tar.gz"))


def only_on_path(tmp_path, *tools):
    """A PATH holding only ``tools`` (links to the real ones)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        os.symlink(shutil.which(tool), bin_dir / tool)
    return {**os.environ, "PATH": str(bin_dir)}


def run_cli(env, *args):
    return subprocess.run([sys.executable, "-m", "model_compile", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("tools, message", [
    (("gcc",), "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"),
    (("gcc", "aarch64-linux-gnu-gcc"), "apt-get install qemu-user-static"),
])
def test_missing_cross_tools_say_how_to_install_them(tmp_path, sample_model_dir, tools, message):
    env = only_on_path(tmp_path, *tools)
    proc = run_cli(env, str(sample_model_dir("rtb-small") / "model.tar.gz"), "-o", str(tmp_path / "out"),
                   "--target", "linux-aarch64")
    assert proc.returncode == EXIT_COMPILER, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, code, message", [
    (["--target", "linux-riscv64"], EXIT_INPUT, "invalid choice: 'linux-riscv64'"),
    (["--cpu", "neoverse-n1"], EXIT_COMPILER, "--cpu neoverse-n1 applies to none of the targets linux-x86_64"),
    (["--cpu", "graviton9"], EXIT_INPUT, "invalid choice: 'graviton9'"),
    (["--target", "linux-aarch64", "--target", "linux-aarch64"], EXIT_COMPILER, "a target is named twice"),
])
def test_bad_targets_and_cpus_are_clear_errors(tmp_path, sample_model_dir, args, code, message):
    proc = run_cli(dict(os.environ), str(sample_model_dir("rtb-small") / "model.tar.gz"),
                   "-o", str(tmp_path / "out"), *args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_cpu_gcc_does_not_know_is_refused_before_compiling():
    from model_compile.toolchain import ToolchainError, TARGETS, cpu_options

    assert cpu_options(TARGETS["linux-aarch64"], "neoverse-n1", "aarch64-linux-gnu-gcc") == ["-mcpu=neoverse-n1"]
    with pytest.raises(ToolchainError, match="does not apply to linux-x86_64"):
        cpu_options(TARGETS["linux-x86_64"], "neoverse-v1", "gcc")
    with pytest.raises(CompileError, match="unknown target"):
        compile_artifact("unused", "unused", targets=["windows-arm64"])


# ---- the kernel generator for arm64: NEON and portable walks, under emulation -------------------------

ARM64 = TARGETS["linux-aarch64"]
CROSS_GCC = "aarch64-linux-gnu-gcc"
NEON, PORTABLE = (next(code for code, name in ISA_NAMES.items() if name == n) for n in ("neon", "portable"))


@pytest.mark.parametrize("objective, kwargs", [
    ("binary:logistic", {"n_trees": 37, "depth": 6}),        # trees of uneven depth, not a multiple of 16
    ("multi:softprob", {"n_trees": 7, "depth": 3}),
    ("reg:squarederror", {"n_trees": 1, "depth": 1}),
])
def test_both_arm64_walks_give_xgboosts_answer_under_emulation(tmp_path, objective, kwargs):
    booster, _ = train_small(objective, **kwargs)
    build_kernel_library(treelite_document(treelite.frontend.from_xgboost(booster)), tmp_path / "k.so",
                         toolchain=CROSS_GCC)
    description = ModelDescription.from_booster(booster)
    X = threshold_rows(description.split_thresholds, description.num_feature, 150, seed=3)
    runner = EmulatedModel(tmp_path / "k.so", ARM64, CROSS_GCC, description.num_feature)
    try:
        runner.predict(X[:1])
        assert runner.kernel_isa == NEON      # what the library chose when qemu's CPU said HWCAP_ASIMD
        for margin in (False, True):
            expected = xgboost_predict(booster, X, objective, margin=margin)
            # 1 and 15 rows: trees in lanes; 150: two blocks of 64 (rows in lanes) and 22 left over.
            for n in (1, 15, 150):
                answers = [runner.predict(X[:n], margin=margin, isa=isa) for isa in (PORTABLE, NEON)]
                for isa, got in zip(("portable", "neon"), answers):
                    assert np.abs(got.reshape(expected[:n].shape) - expected[:n]).max() <= 1e-5, (isa, n, margin)
                assert np.array_equal(answers[0], answers[1]), (n, margin)
        with pytest.raises(RuntimeError, match="lacks the version asked for"):   # AVX2: not in an arm64 library
            runner.predict(X[:1], isa=next(code for code, name in ISA_NAMES.items() if name == "avx2"))
    finally:
        runner.close()


@pytest.mark.parametrize("objective, kwargs", [
    ("binary:logistic", {"base_score": 0.8}),
    ("binary:logitraw", {}),
    ("reg:squarederror", {"base_score": 10.0}),
    ("reg:logistic", {}),
    ("count:poisson", {}),
    ("reg:gamma", {}),
    ("reg:tweedie", {}),
    ("multi:softprob", {}),
    ("multi:softmax", {}),
    ("rank:ndcg", {}),
    ("reg:squaredlogerror", {}),
    ("reg:pseudohubererror", {}),
    ("binary:hinge", {}),
    ("survival:cox", {}),
    ("reg:squarederror", {"booster": "dart"}),
])
def test_every_objective_compiles_for_arm64_with_the_kernel(tmp_path, small_model_file, objective, kwargs):
    path, X = small_model_file(objective, **kwargs)
    lines = []
    manifest = compile_artifact(path, tmp_path / "out.tar.gz", sample_data=X[:200], measure_speed=False,
                                targets=["linux-aarch64"], generator="kernel", progress=lines.append)
    lib = manifest.library
    assert (lib.generator, lib.params["isa"], lib.platform) == ("kernel", "neon", "linux_aarch64")
    assert lib.verified_by.startswith("emulated: qemu-aarch64") and manifest.verification.max_abs_diff <= 1e-5
    assert any(line.startswith("verified compiled (kernel), portable walk") for line in lines)
    safe_extract(tmp_path / "out.tar.gz", tmp_path / "x")
    assert elf_machine(tmp_path / "x" / "model.so") == "aarch64"


def test_a_broken_neon_walk_fails_verification(tmp_path, small_model_file, monkeypatch):
    """The NEON comparison flipped (x < threshold goes right): the kernel compile for arm64 fails with
    the emulated library named; auto drops it and ships TL2cgen's library, saying why."""
    import model_compile.codegen as codegen

    right = "vcgeq_f32(x, vld1q_f32(thr))"
    source = codegen.kernel_source()
    assert source.count(right) == 1
    monkeypatch.setattr(codegen, "kernel_source", lambda: source.replace(right, "vcltq_f32(x, vld1q_f32(thr))"))
    path, X = small_model_file("binary:logistic")
    with pytest.raises(VerificationError, match=r"^linux-aarch64 library \(emulated: qemu-aarch64.*row"):
        compile_artifact(path, tmp_path / "k.tar.gz", sample_data=X[:200], measure_speed=False,
                         targets=["linux-aarch64"], generator="kernel")
    assert not (tmp_path / "k.tar.gz").exists()
    manifest = compile_artifact(path, tmp_path / "a.tar.gz", sample_data=X[:200], measure_speed=False,
                                targets=["linux-aarch64"])
    assert manifest.library.generator == "tl2cgen" and "isa" not in manifest.library.params
    assert "kernel library failed verification" in manifest.library.generator_choice["reason"]


@pytest.mark.parametrize("cpu", ["neoverse-n1", "neoverse-v1", "neoverse-v2"])
def test_the_arm64_kernel_is_tuned_for_every_graviton(tmp_path, small_model_file, cpu):
    path, X = small_model_file("binary:logistic", n_trees=20, depth=5)
    manifest = compile_artifact(path, tmp_path / "out.tar.gz", sample_data=X[:200], measure_speed=False,
                                targets=["linux-aarch64"], cpu=cpu)
    lib = manifest.library
    assert (lib.generator, lib.params["isa"], lib.cpu) == ("kernel", "neon", cpu)
    spellings = {"-mcpu=" + cpu} | ({"-mcpu=demeter"} if cpu == "neoverse-v2" else set())   # gcc 12's name
    (flag,) = [f for f in lib.flags if f.startswith("-mcpu=")]
    assert flag in spellings
    assert manifest.verification.max_abs_diff <= 1e-5
