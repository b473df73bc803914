"""Running a library compiled for another architecture, to verify it: user-mode emulation.

An arm64 library cannot be loaded by this x86-64 process. ``EmulatedModel``
cross-compiles a small C driver (``emulated_predict.c``) with the library's
compiler and runs it under Debian's ``qemu-aarch64-static`` (package
qemu-user-static) or ``qemu-aarch64`` (qemu-user), with the cross compiler's
C library as the emulated root: it dlopens the library and predicts the rows
through the same entry point the server calls. ``predict`` has
``CompiledModel.predict``'s contract, so verification compares it with XGBoost
exactly as it compares a native library. Emulation checks results, never speed.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from model_compile.toolchain import Target, ToolchainError
from model_core.machine import current_platform

DRIVER_SOURCE = "emulated_predict.c"
RUN_TIMEOUT_S = 600


def emulator_for(target: Target) -> str:
    """The qemu user-mode emulator for ``target``'s architecture; ToolchainError says how to install it."""
    arch = target.triplet.split("-")[0]
    for name in (f"qemu-{arch}-static", f"qemu-{arch}"):
        if shutil.which(name):
            return name
    raise ToolchainError(
        f"verifying a {target.name} library here needs user-mode emulation (qemu-{arch}-static), which "
        f"is not installed: `apt-get install qemu-user-static` on Debian or Ubuntu (or `make tools`)")


@functools.lru_cache(maxsize=None)
def emulator_version(emulator: str) -> str:
    """e.g. ``qemu-aarch64-static 7.2.22``."""
    out = subprocess.run([emulator, "--version"], capture_output=True, text=True, timeout=30, check=False)
    words = out.stdout.split()
    version = words[2] if len(words) > 2 and words[1] == "version" else "unknown"
    return f"{emulator} {version}"


def sysroot(compiler: str) -> Path:
    """The cross compiler's target root (``/usr/aarch64-linux-gnu``): the emulated dynamic
    loader and C library live under its lib/."""
    libc = subprocess.run([compiler, "-print-file-name=libc.so.6"], capture_output=True, text=True,
                          timeout=30, check=False).stdout.strip()
    path = Path(libc).resolve()
    if not path.is_file():
        raise ToolchainError(f"{compiler} has no C library (libc.so.6): install its libc6-dev-*-cross package")
    return path.parent.parent


class EmulatedModel:
    """A library for ``target``, run under emulation. ``compiler``: the cross gcc that built it."""

    def __init__(self, libpath: str | Path, target: Target, compiler: str, num_feature: int):
        self.libpath = Path(libpath).resolve()
        self.num_feature = num_feature
        self.kernel_isa: int | None = None
        self.emulator = emulator_for(target)
        self.root = sysroot(compiler)
        self._tmp = tempfile.TemporaryDirectory(prefix="mc-emulate-")
        self.driver = Path(self._tmp.name) / "emulated_predict"
        source = Path(self._tmp.name) / DRIVER_SOURCE
        source.write_text(resources.files("model_compile").joinpath(DRIVER_SOURCE).read_text())
        proc = subprocess.run([compiler, "-O2", "-std=c99", "-o", str(self.driver), str(source), "-ldl"],
                              capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise ToolchainError(f"{compiler} could not build the verification driver: {proc.stderr.strip()}")

    @property
    def method(self) -> str:
        """How the library was run, for the manifest."""
        return f"emulated: {emulator_version(self.emulator)} user-mode emulation on {current_platform()}"

    def predict(self, X: np.ndarray, margin: bool = False, isa: int | None = None) -> np.ndarray:
        """As ``CompiledModel.predict``: (n,) for one output per row, (n, width) otherwise.

        ``isa``: run that walk of a kernel library (``codegen.ISA_NAMES``) instead of
        the one it chose when it loaded. Afterwards ``kernel_isa`` is the walk that
        ran (None for a library without versions, TL2cgen's)."""
        X = np.ascontiguousarray(X, dtype="<f4")
        if X.ndim != 2 or X.shape[1] != self.num_feature:
            raise ValueError(f"expected rows of {self.num_feature} features, got shape {X.shape}")
        tmp = Path(self._tmp.name)
        rows, out = tmp / "rows.bin", tmp / "out.bin"
        with open(rows, "wb") as f:
            f.write(np.int64(X.shape[0]).astype("<i8").tobytes())
            f.write(np.int32(X.shape[1]).astype("<i4").tobytes())
            f.write(X.tobytes())
        proc = subprocess.run([self.emulator, "-L", str(self.root), str(self.driver), str(self.libpath),
                               str(rows), str(out), str(int(margin)), *([] if isa is None else [str(isa)])],
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"the library failed under {self.emulator} (exit {proc.returncode}): "
                               f"{proc.stderr.strip()[-500:]}")
        data = out.read_bytes()
        width, ran = (int(v) for v in np.frombuffer(data[:8], dtype="<i4"))
        self.kernel_isa = None if ran < 0 else ran
        result = np.frombuffer(data[8:], dtype="<f4").astype(np.float32).reshape(X.shape[0], width)
        return result.reshape((X.shape[0],) if width == 1 else (X.shape[0], width))

    def close(self) -> None:
        self._tmp.cleanup()
