"""Runs INSIDE the serving image (mounted read-only): loads the compiled library of the
artifact at /opt/ml/model with model_core.runtime, as the server does, and compares it
with XGBoost on the rows of the CSV file given (no header, empty field = missing).
Prints one JSON object on stdout."""
import json
import sys
from pathlib import Path

import numpy as np
import xgboost as xgb

from model_core.artifact import read_manifest, sha256_file
from model_core.runtime import CompiledModel
from model_core.machine import compatibility_problems, current_machine

model_dir = Path("/opt/ml/model")
manifest = read_manifest(model_dir)
library = model_dir / manifest.library.file
rows = np.genfromtxt(sys.argv[1], delimiter=",", dtype=np.float32, filling_values=np.nan)
compiled = CompiledModel(library)
reference = xgb.Booster(model_file=str(model_dir / manifest.model.file)).inplace_predict(rows)
print(json.dumps({
    "compatibility_problems": compatibility_problems(manifest.library.platform, manifest.library.libc),
    "library_sha256_matches": sha256_file(library) == manifest.library.sha256,
    "built_for": {"platform": manifest.library.platform, "libc": manifest.library.libc},
    "runtime": current_machine(),
    "backend": compiled.backend,
    "rows": int(rows.shape[0]),
    "max_abs_diff": float(np.max(np.abs(compiled.predict(rows) - reference))),
    "tolerance": manifest.verification.tolerance,
}))
