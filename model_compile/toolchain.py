"""The C toolchain that builds model libraries.

Only the compiler's version and the code generation flags travel with a
library; -march is deliberately absent so that the library runs on any
x86-64 instance, not just the CPU that compiled it.
"""
from __future__ import annotations

import functools
import shutil
import subprocess

DEFAULT_TOOLCHAIN = "gcc"


@functools.lru_cache(maxsize=None)
def compiler_version(toolchain: str = DEFAULT_TOOLCHAIN) -> str:
    """e.g. ``gcc 12.2.0``; raises FileNotFoundError when the compiler is not on PATH."""
    exe = shutil.which(toolchain)
    if exe is None:
        raise FileNotFoundError(f"C compiler {toolchain!r} not found on PATH (compiling needs gcc)")
    out = subprocess.run([exe, "-dumpfullversion", "-dumpversion"], capture_output=True,
                         text=True, timeout=30, check=False)
    return f"{toolchain} {out.stdout.strip() or 'unknown'}"
