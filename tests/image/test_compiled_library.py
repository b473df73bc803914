"""A library compiled in the compile image loads and verifies in the serving image."""
from __future__ import annotations

import json

from tests.image.engine import REPO_ROOT

PROBE = REPO_ROOT / "tests" / "image" / "probe_library.py"


def test_library_from_compile_image_loads_and_verifies_in_runtime_image(engine, runtime_image,
                                                                        compiled_model):
    model_dir, source_dir = compiled_model["model_dir"], compiled_model["source_dir"]
    proc = engine.docker("run", "--rm", "--network", "host",
                         "-v", f"{model_dir}:/opt/ml/model:ro", "-v", f"{PROBE}:/probe.py:ro",
                         "-v", f"{source_dir / 'sample.csv'}:/sample.csv:ro",
                         runtime_image, "python", "/probe.py", "/sample.csv")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # Same platform and libc by construction (both images come from one base).
    assert report["compatibility_problems"] == [], report
    assert report["built_for"] == {k: report["runtime"][k] for k in ("platform", "libc")}
    assert report["library_sha256_matches"]
    assert report["backend"] == "direct"     # model_compile's entry point, not the fallback
    assert report["rows"] == 2000
    assert report["max_abs_diff"] <= report["tolerance"] <= 1e-5, report
