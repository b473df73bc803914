"""Request bodies drawn from a sample model's held-out rows.

The sample models (``sample_models``) write ``sample.csv``: one request row per line,
no header, an empty field for a missing value: exactly what a bidder would send. A
body of ``rows_per_request`` rows is that many lines picked at random from the file.
"""
from __future__ import annotations

import random
from pathlib import Path

# Every wrk thread holds all the bodies in memory: keep the set small.
MAX_BODIES_BYTES = 4 * 1024 * 1024
DEFAULT_BODIES = 256


def read_sample_rows(csv_path: Path) -> list[str]:
    """The non-empty lines of a sample CSV file, without line ends."""
    rows = [line for line in Path(csv_path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{csv_path}: no rows")
    return rows


def make_bodies(rows: list[str], rows_per_request: int, count: int = DEFAULT_BODIES,
                seed: int = 0) -> list[bytes]:
    """``count`` CSV bodies of ``rows_per_request`` lines each, drawn with a fixed seed.

    Fewer bodies are made when ``count`` of them would exceed MAX_BODIES_BYTES.
    """
    if rows_per_request < 1:
        raise ValueError("rows_per_request must be at least 1")
    rng = random.Random(seed)
    mean_line = sum(len(r) + 1 for r in rows[:1000]) / min(len(rows), 1000)
    count = max(1, min(count, int(MAX_BODIES_BYTES / (mean_line * rows_per_request))))
    return [("\n".join(rng.choices(rows, k=rows_per_request)) + "\n").encode() for _ in range(count)]


def write_bodies(bodies: list[bytes], path: Path) -> Path:
    """Write bodies NUL-separated, the format bench/wrk_bench.lua reads; returns path."""
    if any(b"\0" in body for body in bodies):
        raise ValueError("a body contains a NUL byte")
    Path(path).write_bytes(b"\0".join(bodies))
    return Path(path)
