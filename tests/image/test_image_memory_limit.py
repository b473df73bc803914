"""The serving image under a container memory limit (docker run --memory): 6 MB bodies of
every content type at once, no OOM kill (bench.reliability's memory-limit scenario, bounded:
12 requests at once under 768 MB; the full run sends 24 rounds of two under 1 GB)."""
from __future__ import annotations

from bench import reliability
from tests.image.conftest import FIGURES


def test_six_mb_bodies_of_every_type_under_a_memory_limit(engine, runtime_image, compiled_model, tmp_path,
                                                          monkeypatch):
    for key in ("DOCKER_HOST", "DOCKER_CONFIG"):       # the scenario runs docker as a user would
        if key in engine.env:
            monkeypatch.setenv(key, engine.env[key])
    row = reliability.scenario_memory_limit(compiled_model["model_dir"], tmp_path, num_feature=7,
                                            image=runtime_image, memory="768m", per_type=2, rounds=1)
    c = row.counts
    assert "skipped" not in c, c
    assert c["oom_kills"] == 0 and c["oom_killed"] is False and c["running"] is True, c
    assert c["worker_deaths"] == 0 and c["worker_starts"] >= 1, c
    assert all(statuses == ["200"] for statuses in c["statuses"].values()), c["statuses"]
    assert c["memory_samples"] > 0 and c["anon_mb_before"] < c["anon_mb_peak"] < 768, c
    assert row.passed
    FIGURES.append(f"memory-limit: {c['concurrent_requests']} x 6 MB at once under --memory 768m: "
                   f"{c['anon_mb_before']} -> {c['anon_mb_peak']} MB, {c['mb_per_request_in_flight']} MB "
                   f"per request in flight, 0 OOM kills ({c['seconds']} s)")
