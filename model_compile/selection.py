"""Which generator's library a compile ships: the faster one, measured on this machine.

Both libraries have passed verification before they get here. Each is timed (one
thread, the median of calls on fresh rows, the two taking turns at each batch size so
that outside load slows both alike) at a few batch sizes; the kernel's library is
chosen when the geometric mean of its time ratios to TL2cgen's is below 1, i.e. when
it is faster overall, so that noise at one size cannot flip a clear result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from model_compile.verify import median_seconds

SIZES = (1, 10, 100, 1000)
BUDGET_SECONDS = 0.15      # per library and batch size


@dataclass
class Choice:
    generator: str                       # "kernel" or "tl2cgen"
    reason: str                          # one line, for the manifest and the log
    timings: list[dict] = field(default_factory=list)   # [{"rows", "kernel_ms", "tl2cgen_ms"}]

    def to_dict(self) -> dict:
        return {"reason": self.reason, "timings": self.timings}


def choose(kernel, tl2cgen, rows: np.ndarray, sizes=SIZES, budget: float = BUDGET_SECONDS) -> Choice:
    """Time ``kernel.predict`` and ``tl2cgen.predict`` (CompiledModels) on ``rows``."""
    pool = np.ascontiguousarray(rows, dtype=np.float32)
    if pool.shape[0] < 2 * max(sizes):
        pool = np.tile(pool, (int(np.ceil(2 * max(sizes) / max(1, pool.shape[0]))), 1))
    timings = []
    for n in sizes:
        k = median_seconds(kernel.predict, pool, n, budget, max_runs=2000)
        t = median_seconds(tl2cgen.predict, pool, n, budget, max_runs=2000)
        timings.append({"rows": n, "kernel_ms": round(k * 1e3, 5), "tl2cgen_ms": round(t * 1e3, 5)})
    ratio = math.exp(np.mean([math.log(x["kernel_ms"] / x["tl2cgen_ms"]) for x in timings]))
    summary = ", ".join(f"{x['rows']} rows {x['tl2cgen_ms'] / x['kernel_ms']:.2f}x" for x in timings)
    if ratio < 1:
        return Choice("kernel", f"kernel faster than TL2cgen ({summary})", timings)
    return Choice("tl2cgen", f"TL2cgen not slower than the kernel (kernel speed-up {summary})", timings)
