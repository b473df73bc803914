"""The multi-model benchmark, bounded: two compiled seed variants, 1-second runs."""
from __future__ import annotations

import numpy as np

from bench import multi_model
from bench.load import run_load


def test_zipf_popularity_favours_the_first_models():
    picks = multi_model.zipf_choices(100, 20_000, seed=1)
    counts = np.bincount(picks, minlength=100)
    assert picks.min() >= 0 and picks.max() < 100
    assert counts[0] > counts[1] > counts[10] > counts[99] > 0


def test_a_bounded_run_measures_both_servers_side_by_side(tmp_path):
    report = multi_model.run([2], root=tmp_path / "models", workers=1, duration_s=1, steps=1, connections=8,
                             cold_repeats=2, progress=lambda line: None)
    (result,) = report.results
    assert result.models == 2 and result.single_rate > 0 and result.multi_rate > 0
    assert result.memory_per_model_bytes > 0
    assert len(report.cold_load_ms) == 2 and all(ms > 0 for ms in report.cold_load_ms)
    text = multi_model.render(report)
    assert "N=  2" in text and "NOT MEASURED" in text and "cold load of a compiled rtb-small" in text


def test_request_paths_reach_the_wrk_script(tmp_path):
    """Half the bodies go to a model that is not loaded: exactly those answer 404."""
    from bench.servers import free_port, running_server

    folders, sample = multi_model.variant_models(1, tmp_path / "models", progress=lambda line: None)
    port = free_port()
    env = multi_model._env(port, 1, SERVE_MODEL_ROOT=str(folders[0].parent.parent))
    with running_server("multi", multi_model._serve_argv() + ["--multi-model"], port, env=env,
                        log_dir=tmp_path) as server:
        multi_model.load_models(server.url, [("seed0", folders[0])])
        body = sample.read_text().splitlines()[0].encode()
        with multi_model.request_paths(["/models/seed0/invoke", "/models/nobody/invoke"] * 50, tmp_path):
            result = run_load(server.url, [body] * 100, connections=2, duration_s=1, warmup_s=0)
    assert result.requests > 20
    assert 0.3 < result.errors / result.requests < 0.7
