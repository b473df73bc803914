"""``python -m model_compile.measure ARTIFACT [ROWS.csv]``: per-call latency of one compiled artifact.

A quick in-process check of what a compile produced (the ``bench`` package
does the full study): median microseconds per call, one thread, for
``CompiledModel`` through its direct entry point, the same library through
``tl2cgen.Predictor``, and XGBoost ``inplace_predict`` on the artifact's model.ubj.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from model_core.artifact import read_manifest, safe_extract
from model_core.runtime import CompiledModel
from model_compile.verify import median_seconds

BATCHES = (1, 10, 100, 1000)


def median_us(fn, pool: np.ndarray, n: int, seconds: float = 0.3, min_runs: int = 20) -> float:
    """Median microseconds of ``fn(batch)``, each call on the next ``n`` rows of ``pool``
    (fresh rows per call, as live traffic: the same batch again would train the
    branch predictor and flatter small batches)."""
    return median_seconds(fn, pool, n, seconds, min_runs=min_runs, max_runs=100_000) * 1e6


def measure(folder: Path, rows: np.ndarray, batches=BATCHES) -> list[dict]:
    """Timings for an extracted artifact ``folder`` on ``rows`` (tiled as needed)."""
    import xgboost as xgb

    manifest = read_manifest(folder)
    direct = CompiledModel(folder / manifest.library.file)
    stock = CompiledModel(folder / manifest.library.file, backend="tl2cgen")
    booster = xgb.Booster()
    booster.load_model(str(folder / manifest.model.file))
    booster.set_param({"nthread": 1})
    pool = np.ascontiguousarray(np.tile(rows, (int(np.ceil(2 * max(batches) / len(rows))), 1)),
                                dtype=np.float32)
    results = []
    for n in batches:
        results.append({
            "rows": n,
            "direct_us": median_us(direct.predict, pool, n),
            "tl2cgen_us": median_us(stock.predict, pool, n),
            "xgboost_us": median_us(lambda X: booster.inplace_predict(X, validate_features=False), pool, n),
        })
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_compile.measure", description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, help="a model.tar.gz written by model-compile")
    parser.add_argument("rows", type=Path, nargs="?", help="CSV rows to time on (default: random normal)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        safe_extract(args.artifact, Path(tmp))
        manifest = read_manifest(Path(tmp))
        if args.rows:
            from model_compile.pipeline import read_rows_csv

            rows = read_rows_csv(args.rows, manifest.model.num_feature)
        else:
            rows = np.random.default_rng(0).standard_normal((1000, manifest.model.num_feature)).astype(np.float32)
        print(f"{args.artifact}: {manifest.model.num_tree} trees, {manifest.model.num_feature} features; "
              "median us per call, one thread")
        print(f"{'rows':>6} {'CompiledModel':>14} {'tl2cgen.Predictor':>18} {'XGBoost inplace':>16}")
        for r in measure(Path(tmp), rows):
            print(f"{r['rows']:>6} {r['direct_us']:>14.1f} {r['tl2cgen_us']:>18.1f} {r['xgboost_us']:>16.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
