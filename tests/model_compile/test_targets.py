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
import xgboost as xgb

from model_compile import compile_artifact
from model_compile.cli import EXIT_COMPILER, EXIT_INPUT
from model_compile.compiler import CompileError
from model_compile.verify import VerificationError
from model_core.artifact import read_manifest, safe_extract, sha256_file
from model_core.machine import current_machine
from model_core.runtime import CompiledModel

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


@pytest.mark.parametrize("name, cpu", [("rtb-small", ""), ("rtb-large", "neoverse-v1")])
def test_sample_models_compile_for_arm64_and_verify_under_emulation(sample_model_dir, tmp_path, name, cpu):
    folder, booster, X = reference(sample_model_dir, name)
    lines = []
    manifest = compile_artifact(folder / "model.tar.gz", tmp_path / "model.tar.gz",
                                sample_data=folder / "sample.csv", targets=["linux-aarch64"], cpu=cpu,
                                progress=lines.append)
    lib = manifest.library
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
    """Tolerance 0: both libraries are off XGBoost by float rounding, and both compiles fail
    with the same message, the emulated one saying which library and how it ran."""
    folder = sample_model_dir("rtb-small")
    failures = {}
    for target in ("linux-x86_64", "linux-aarch64"):
        with pytest.raises(VerificationError) as caught:
            compile_artifact(folder / "model.tar.gz", tmp_path / target, sample_data=folder / "sample.csv",
                             targets=[target], tolerance=0.0, measure_speed=False)
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
