"""``python -m bench cost-curve``: real servers on loopback, open loop at fixed rates, their CPU counted."""
from __future__ import annotations

from bench.cost_curve import CostPoint, cost_curve_table, run_cost_curve
from serve.gunicorn_conf import WorkerPlan


def test_each_configuration_runs_at_each_rate_with_its_cpu_counted(deployed_model, tmp_path):
    model = deployed_model("rtb-small")
    configs = [WorkerPlan("granian", 1, 2), WorkerPlan("gevent", 1)]
    lines = []
    points = run_cost_curve(model, configs, [100, 300], duration_s=1, connections=4, log_dir=tmp_path,
                            progress=lines.append)
    # rate by rate, the servers taking turns
    assert [(p.offered_rate, p.config) for p in points] == [
        (100, "granian w1 t2"), (100, "gevent w1"), (300, "granian w1 t2"), (300, "gevent w1")]
    for p in points:
        assert p.achieved_rate >= 0.9 * p.offered_rate and p.p99_ms > 0
        # the workers' CPU is counted, not only the master's: an HTTP request costs a worker tens of
        # microseconds at least (hundreds at these low rates), the master next to nothing
        assert 10 < p.cpu_us_per_request < 20_000 and p.switches_per_request > 0.5
        assert 0 < p.vcpus_busy < 1.5
    assert len(lines) == 4 and "gevent w1" in lines[1]


def test_the_table_flags_a_rate_the_server_did_not_hold():
    def point(config, offered, achieved, cpu):
        return CostPoint(config=config, offered_rate=offered, achieved_rate=achieved, vcpus_busy=achieved * cpu / 1e6,
                         cpu_us_per_request=cpu, switches_per_request=1.0, p50_ms=1.0, p99_ms=2.0)

    table = cost_curve_table([point("granian w1 t8", 1000, 1000, 150.0), point("gevent w1", 1000, 1000, 330.0),
                              point("granian w1 t8", 8000, 8000, 60.0), point("gevent w1", 8000, 4000, 240.0)])
    lines = table.splitlines()
    assert lines[1].split() == ["req/s", "granian", "w1", "t8", "gevent", "w1"]
    assert lines[2].split() == ["1,000", "150.0", "(0.15)", "330.0", "(0.33)"]
    assert lines[3].split() == ["8,000", "60.0", "(0.48)", "240.0", "(0.96)", "!"]
