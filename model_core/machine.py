"""The machine a library is compiled for and the machine that loads it.

A compiled library is native code: it runs only where the platform matches and
the C library is at least as new as the one it was linked against. The
compiler records :func:`current_machine` in the manifest; the server calls
:func:`compatibility_problems` before loading a library.
"""
from __future__ import annotations

import platform
import re
import sysconfig


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


def _libc_tuple(libc: str) -> tuple[str, tuple[int, ...]] | None:
    match = re.fullmatch(r"(\S+) (\d+(?:\.\d+)*)", libc.strip())
    if not match:
        return None
    return match.group(1), tuple(int(p) for p in match.group(2).split("."))


def compatibility_problems(platform_tag: str, libc: str, runtime: dict[str, str] | None = None) -> list[str]:
    """Reasons a library built for ``platform_tag``/``libc`` cannot load here ([] = none).

    ``runtime`` defaults to :func:`current_machine`. A library linked against an
    older glibc runs on a newer one; the reverse may fail at load time.
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
    return problems
