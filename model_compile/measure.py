"""``python -m model_compile.measure ARTIFACT [ROWS.csv] [--against OTHER.tar.gz ...]``: per-call
latency of compiled artifacts, side by side in one run.

A quick in-process check of what a compile produced (the ``bench`` package
does the full study): median microseconds per call, one thread, for
``CompiledModel`` on each artifact's library (labelled by its generator), the
first library through ``tl2cgen.Predictor`` where TL2cgen made it, and XGBoost
``inplace_predict`` on the first artifact's model.ubj. ``--against`` adds other
compiles of the same model (e.g. ``model-compile --generator tl2cgen``), timed
in turn with the first at each batch size so that outside load slows them alike.
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


def measure(folder: Path, rows: np.ndarray, batches=BATCHES, against: tuple[Path, ...] = ()) -> list[dict]:
    """Timings for an extracted artifact ``folder`` (and the extracted artifacts ``against``)
    on ``rows`` (tiled as needed). Per batch size: ``direct_us`` (the first library),
    ``tl2cgen_us`` (the first through tl2cgen.Predictor, None unless TL2cgen made it),
    ``xgboost_us``, and ``others_us`` (one per ``against`` folder)."""
    import xgboost as xgb

    manifest = read_manifest(folder)
    direct = CompiledModel(folder / manifest.library.file)
    stock = (CompiledModel(folder / manifest.library.file, backend="tl2cgen")
             if manifest.library.generator == "tl2cgen" else None)
    others = [CompiledModel(f / read_manifest(f).library.file) for f in against]
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
            "tl2cgen_us": median_us(stock.predict, pool, n) if stock else None,
            "xgboost_us": median_us(lambda X: booster.inplace_predict(X, validate_features=False), pool, n),
            "others_us": [median_us(other.predict, pool, n) for other in others],
        })
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_compile.measure", description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, help="a model.tar.gz written by model-compile")
    parser.add_argument("rows", type=Path, nargs="?", help="CSV rows to time on (default: random normal)")
    parser.add_argument("--against", type=Path, nargs="+", default=[], metavar="OTHER.tar.gz",
                        help="other compiles of the same model to time side by side")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        folders = []
        for i, archive in enumerate([args.artifact, *args.against]):
            folders.append(Path(tmp) / str(i))
            safe_extract(archive, folders[-1])
        manifests = [read_manifest(f) for f in folders]
        manifest = manifests[0]
        if any(m.model.source_sha256 != manifest.model.source_sha256 for m in manifests):
            parser.error("--against artifacts must be compiles of the same model")
        if args.rows:
            from model_compile.pipeline import read_rows_csv

            rows = read_rows_csv(args.rows, manifest.model.num_feature)
        else:
            rows = np.random.default_rng(0).standard_normal((1000, manifest.model.num_feature)).astype(np.float32)
        trees = manifest.model.num_tree
        print(f"{args.artifact}: {trees} trees, {manifest.model.num_feature} features; "
              "median us per call, one thread")
        for path, folder, m in zip([args.artifact, *args.against], folders, manifests):
            size = (folder / m.library.file).stat().st_size
            print(f"  {m.library.generator:>8}: {path.name}, library {size / 1e6:.2f} MB, "
                  f"{m.library.generator_choice.get('reason', '')}")
        names = [f"{m.library.generator} ({i})" if i else m.library.generator for i, m in enumerate(manifests)]
        stock = manifest.library.generator == "tl2cgen"
        print(f"{'rows':>6} " + " ".join(f"{n:>14}" for n in names)
              + (f" {'tl2cgen.Predictor':>18}" if stock else "")
              + f" {'XGBoost inplace':>16} {'ns/tree/row':>12} {'vs XGBoost':>10}")
        for r in measure(folders[0], rows, against=tuple(folders[1:])):
            cells = [r["direct_us"], *r["others_us"]]
            print(f"{r['rows']:>6} " + " ".join(f"{c:>14.1f}" for c in cells)
                  + (f" {r['tl2cgen_us']:>18.1f}" if stock else "")
                  + f" {r['xgboost_us']:>16.1f} {r['direct_us'] * 1e3 / trees / r['rows']:>12.2f}"
                  + f" {r['xgboost_us'] / r['direct_us']:>9.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
