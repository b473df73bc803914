"""The C toolchain that builds model libraries, per compile target.

A target is an operating system and architecture (``linux-x86_64``,
``linux-aarch64``): this machine's is compiled with ``gcc``, another with
Debian's cross compiler (``aarch64-linux-gnu-gcc``). Only the compiler's
version and the code generation flags travel with a library. -march is
deliberately absent so that a library runs on any instance of its
architecture; ``--cpu`` opts in to one Graviton generation's instructions
(``-mcpu=neoverse-v1``), and the server then refuses the library on a CPU
without them (``model_core.machine.CPU_FEATURES``).
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from model_core.machine import CPU_FEATURES, current_libc, current_platform

DEFAULT_TOOLCHAIN = "gcc"


class ToolchainError(RuntimeError):
    """The compiler a target needs is missing or refuses an option; the message says what to do."""


@dataclass(frozen=True)
class Target:
    name: str                    # linux-aarch64: what --target takes and the manifest records
    platform: str                # linux_aarch64: model_core.machine.current_platform() on such a machine
    triplet: str                 # aarch64-linux-gnu: the GNU name of Debian's cross tools
    cross_packages: str          # the Debian packages of the cross compiler and its C library
    # --cpu names -> gcc -mcpu spellings, tried in order (gcc 12 calls Neoverse V2 "demeter").
    cpus: dict[str, tuple[str, ...]]

    @property
    def is_native(self) -> bool:
        return self.platform == current_platform()


TARGETS = {t.name: t for t in (
    Target("linux-x86_64", "linux_x86_64", "x86_64-linux-gnu",
           "gcc-x86-64-linux-gnu libc6-dev-amd64-cross", {}),
    Target("linux-aarch64", "linux_aarch64", "aarch64-linux-gnu",
           "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
           {"neoverse-n1": ("neoverse-n1",), "neoverse-v1": ("neoverse-v1",),
            "neoverse-v2": ("neoverse-v2", "demeter")}),
)}
assert all(set(t.cpus) <= set(CPU_FEATURES) for t in TARGETS.values())


def native_target_name() -> str:
    """This machine's target name (``linux-x86_64`` on an x86-64 Linux)."""
    return current_platform().replace("_", "-", 1)


def get_target(name: str) -> Target:
    """The target called ``name``; ToolchainError names the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ToolchainError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}") from None


def compiler_for(target: Target) -> str:
    """The compiler command for ``target``: gcc here, the cross gcc otherwise.
    Raises ToolchainError, saying how to install it, when it is not on PATH."""
    if target.is_native:
        return DEFAULT_TOOLCHAIN
    cross = f"{target.triplet}-gcc"
    if shutil.which(cross) is None:
        raise ToolchainError(
            f"compiling for {target.name} needs the cross compiler {cross}, which is not installed: "
            f"`apt-get install {target.cross_packages}` on Debian or Ubuntu (or `make tools` in this "
            f"repository)")
    return cross


def cpu_options(target: Target, cpu: str, compiler: str) -> list[str]:
    """The gcc options that tune for ``cpu`` ([] for ""): the first -mcpu spelling ``compiler`` takes."""
    if not cpu:
        return []
    if cpu not in target.cpus:
        known = ", ".join(target.cpus) or "none"
        raise ToolchainError(f"--cpu {cpu} does not apply to {target.name} (CPUs known for it: {known})")
    for spelling in target.cpus[cpu]:
        if _accepts(compiler, f"-mcpu={spelling}"):
            return [f"-mcpu={spelling}"]
    raise ToolchainError(f"{compiler_version(compiler)} knows none of -mcpu="
                         f"{', -mcpu='.join(target.cpus[cpu])}: use a newer gcc for {cpu}")


@functools.lru_cache(maxsize=None)
def _accepts(compiler: str, option: str) -> bool:
    with tempfile.TemporaryDirectory(prefix="mc-probe-") as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text("int probe(int x) { return x + 1; }\n")
        proc = subprocess.run([compiler, option, "-c", str(src), "-o", str(Path(tmp) / "probe.o")],
                              capture_output=True, timeout=60, check=False)
    return proc.returncode == 0


@functools.lru_cache(maxsize=None)
def target_libc(compiler: str) -> str:
    """The C library ``compiler`` links against, e.g. ``glibc 2.36``: this process's for the
    native gcc, the cross sysroot's for a cross compiler (read from its libc.so.6)."""
    if compiler == DEFAULT_TOOLCHAIN:
        return current_libc()
    path = subprocess.run([compiler, "-print-file-name=libc.so.6"], capture_output=True, text=True,
                          timeout=30, check=False).stdout.strip()
    try:
        match = re.search(rb"GNU C Library [^\n]*?version (\d+\.\d+)", Path(path).read_bytes())
    except OSError:
        match = None
    return f"glibc {match.group(1).decode()}" if match else "unknown"


@functools.lru_cache(maxsize=None)
def compiler_version(toolchain: str = DEFAULT_TOOLCHAIN) -> str:
    """e.g. ``gcc 12.2.0``; raises FileNotFoundError when the compiler is not on PATH."""
    exe = shutil.which(toolchain)
    if exe is None:
        raise FileNotFoundError(f"C compiler {toolchain!r} not found on PATH (compiling needs gcc)")
    out = subprocess.run([exe, "-dumpfullversion", "-dumpversion"], capture_output=True,
                         text=True, timeout=30, check=False)
    return f"{toolchain} {out.stdout.strip() or 'unknown'}"
