"""The machine a library is compiled for and the machine that loads it.

A compiled library is native code: it runs only where the platform matches and
the C library is at least as new as the one it was linked against, and, for
a library tuned for one CPU (``-mcpu=neoverse-v1``), where the CPU has the
instructions that tuning may use. The compiler records :func:`current_machine`
in the manifest; the server calls :func:`compatibility_problems` before loading
a library.
"""
from __future__ import annotations

import ctypes
import platform
import re
import sysconfig

# What a library compiled with -mcpu=NAME may execute, as the Linux hwcap names
# (/proc/cpuinfo "Features") of the extensions gcc enables for NAME beyond the
# plain architecture. Graviton2 = Neoverse N1, Graviton3 = V1, Graviton4 = V2.
CPU_FEATURES: dict[str, tuple[str, ...]] = {
    "neoverse-n1": ("atomics", "fphp", "asimdhp", "asimdrdm", "asimddp", "lrcpc"),
    "neoverse-v1": ("atomics", "fphp", "asimdhp", "asimdrdm", "asimddp", "lrcpc",
                    "sve", "bf16", "i8mm"),
    "neoverse-v2": ("atomics", "fphp", "asimdhp", "asimdrdm", "asimddp", "lrcpc",
                    "sve", "bf16", "i8mm", "sve2"),
}
GRAVITON = {"neoverse-n1": "Graviton2", "neoverse-v1": "Graviton3", "neoverse-v2": "Graviton4"}

# getauxval(AT_HWCAP / AT_HWCAP2) bits of arm64 (Linux arch/arm64/include/uapi/asm/hwcap.h).
# The auxiliary vector, not /proc/cpuinfo, because user-mode emulation (qemu-aarch64)
# fills it for the CPU it emulates, while /proc/cpuinfo would describe the host.
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_HWCAP_BITS = {"atomics": 8, "fphp": 9, "asimdhp": 10, "asimdrdm": 12, "lrcpc": 15,
               "asimddp": 20, "sve": 22}
_HWCAP2_BITS = {"sve2": 1, "i8mm": 13, "bf16": 14}


def current_platform() -> str:
    """This interpreter's platform tag, e.g. ``linux_x86_64``."""
    return re.sub(r"[-.]", "_", sysconfig.get_platform())


def current_libc() -> str:
    """The C library this process runs on, e.g. ``glibc 2.36``, or ``unknown``."""
    name, version = platform.libc_ver()
    return f"{name} {version}" if name else "unknown"


def cpu_model() -> str:
    """The CPU's model name (Linux), recorded next to the crossover figure it shaped."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def current_machine() -> dict[str, str]:
    """``{"platform": "linux_x86_64", "libc": "glibc 2.36", "cpu": ...}`` for this machine."""
    return {"platform": current_platform(), "libc": current_libc(), "cpu": cpu_model()}


def cpu_features() -> list[str]:
    """The arm64 CPU extensions of :data:`CPU_FEATURES` this process may use ([] elsewhere)."""
    if platform.machine() not in ("aarch64", "arm64"):
        return []
    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return []
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    hwcap, hwcap2 = getauxval(_AT_HWCAP), getauxval(_AT_HWCAP2)
    return sorted([name for name, bit in _HWCAP_BITS.items() if hwcap >> bit & 1]
                  + [name for name, bit in _HWCAP2_BITS.items() if hwcap2 >> bit & 1])


def _libc_tuple(libc: str) -> tuple[str, tuple[int, ...]] | None:
    match = re.fullmatch(r"(\S+) (\d+(?:\.\d+)*)", libc.strip())
    if not match:
        return None
    return match.group(1), tuple(int(p) for p in match.group(2).split("."))


def compatibility_problems(platform_tag: str, libc: str, runtime: dict | None = None,
                           cpu: str = "") -> list[str]:
    """Reasons a library built for ``platform_tag``/``libc`` (tuned for ``cpu``, "" =
    the architecture's baseline) cannot load here ([] = none).

    ``runtime`` defaults to :func:`current_machine`, plus ``"features"``
    (:func:`cpu_features`) when ``cpu`` is given. A library linked against an
    older glibc runs on a newer one; the reverse may fail at load time. A library
    tuned for a CPU may use instructions older CPUs lack (an illegal instruction
    at the first request), so every extension of that CPU must be present.
    """
    runtime = runtime or current_machine()
    problems = []
    if platform_tag != runtime["platform"]:
        problems.append(f"library was compiled for {platform_tag}, this machine is {runtime['platform']}")
    built, here = _libc_tuple(libc), _libc_tuple(runtime["libc"])
    if built and here:
        if built[0] != here[0]:
            problems.append(f"library was linked against {libc}, this machine has {runtime['libc']}")
        elif built[1] > here[1]:
            problems.append(f"library needs {libc} or newer, this machine has {runtime['libc']}")
    if cpu and not problems:
        if cpu not in CPU_FEATURES:
            problems.append(f"library is tuned for CPU {cpu!r}, which this server does not know")
        else:
            features = runtime["features"] if "features" in runtime else cpu_features()
            missing = [f for f in CPU_FEATURES[cpu] if f not in features]
            if missing:
                problems.append(f"library is tuned for {cpu} ({GRAVITON.get(cpu, cpu)}); this CPU lacks "
                                f"{', '.join(missing)} (an older Graviton?)")
    return problems
