"""The sample rows, and request bodies drawn from them: the one place the benchmark reads them.

The sample models (``sample_models``) write ``sample.csv``: one request row per line,
no header, an empty field for a missing value: exactly what a bidder would send. A
body of ``rows_per_request`` rows is that many lines picked at random from the file
(:func:`make_bodies`, for load runs) or taken in turn (:func:`cycled_bodies`, for the
in-process parsers); :func:`rows_matrix` gives the same rows as numbers.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

# Every wrk thread holds all the bodies in memory: keep the set small.
MAX_BODIES_BYTES = 4 * 1024 * 1024
DEFAULT_BODIES = 256


def read_sample_rows(csv_path: Path) -> list[str]:
    """The non-empty lines of a sample CSV file, without line ends."""
    rows = [line for line in Path(csv_path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{csv_path}: no rows")
    return rows


def rows_matrix(rows: list[str], num_feature: int, source: object = "sample") -> np.ndarray:
    """The rows as float32 (empty field = NaN); ValueError unless each has ``num_feature`` fields."""
    X = np.asarray([[float(v) if v else np.nan for v in row.split(",")] for row in rows], dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != num_feature:
        raise ValueError(f"{source}: rows of {X.shape[1:]} features, model takes {num_feature}")
    return X


def csv_body(rows: list[str]) -> bytes:
    """One CSV request body of ``rows``, a line each, as a client sends it."""
    return ("\n".join(rows) + "\n").encode()


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
    return [csv_body(rng.choices(rows, k=rows_per_request)) for _ in range(count)]


def cycled_bodies(rows: list[str], rows_per_request: int, count: int) -> list[bytes]:
    """``count`` bodies of ``rows_per_request`` lines taken in turn, wrapping around."""
    return [csv_body([rows[(k * rows_per_request + j) % len(rows)] for j in range(rows_per_request)])
            for k in range(count)]


def write_bodies(bodies: list[bytes], path: Path) -> Path:
    """Write bodies NUL-separated, the format bench/wrk_bench.lua reads; returns path."""
    if any(b"\0" in body for body in bodies):
        raise ValueError("a body contains a NUL byte")
    Path(path).write_bytes(b"\0".join(bodies))
    return Path(path)
