"""``python -m bench cost-curve``: real servers on loopback, open loop at fixed rates, their CPU counted."""
from __future__ import annotations

import urllib.request

from bench.cost_curve import CostPoint, cost_curve_table, curve_servers, own_costs, run_cost_curve
from bench.payloads import read_sample_rows
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


def test_with_floors_each_configuration_is_followed_by_its_own_hello_world(deployed_model, tmp_path):
    model = deployed_model("rtb-small")
    row = read_sample_rows(model.sample_csv)[0]
    with curve_servers(model, [WorkerPlan("granian", 1, 2)], floors=True, log_dir=tmp_path) as servers:
        assert [(s.label, s.floor_of) for s in servers] == [("granian w1 t2", None),
                                                            ("hello granian w1 t2", "granian w1 t2")]
        answers = [urllib.request.urlopen(urllib.request.Request(
            s.server.url + "/invocations", data=row.encode(), headers={"Content-Type": "text/csv"})).read()
            for s in servers]
    # serve scores the row; its floor is the hello world, which answers its constant
    assert answers[1] == b"0.5\n" and answers[0] != answers[1] and 0 <= float(answers[0]) <= 1


def test_a_curve_with_floors_reads_serves_own_cost_at_each_rate(deployed_model, tmp_path):
    model = deployed_model("rtb-small")
    points = run_cost_curve(model, [WorkerPlan("granian", 1, 2)], [200], duration_s=1, connections=4,
                            log_dir=tmp_path, floors=True, progress=lambda _: None)
    assert [(p.config, p.floor_of) for p in points] == [("granian w1 t2", None),
                                                         ("hello granian w1 t2", "granian w1 t2")]
    floor = points[1]
    assert floor.achieved_rate >= 0.9 * 200 and 10 < floor.cpu_us_per_request < 20_000
    assert own_costs(points) == {(200, "granian w1 t2"): points[0].cpu_us_per_request - floor.cpu_us_per_request}


def point(config, offered, achieved, cpu, floor_of=None):
    return CostPoint(config=config, offered_rate=offered, achieved_rate=achieved, vcpus_busy=achieved * cpu / 1e6,
                     cpu_us_per_request=cpu, switches_per_request=1.0, p50_ms=1.0, p99_ms=2.0, floor_of=floor_of)


def test_the_table_flags_a_rate_the_server_did_not_hold():
    table = cost_curve_table([point("granian w1 t8", 1000, 1000, 150.0), point("gevent w1", 1000, 1000, 330.0),
                              point("granian w1 t8", 8000, 8000, 60.0), point("gevent w1", 8000, 4000, 240.0)])
    lines = table.splitlines()
    assert lines[1].split() == ["req/s", "granian", "w1", "t8", "gevent", "w1"]
    assert lines[2].split() == ["1,000", "150.0", "(0.15)", "330.0", "(0.33)"]
    assert lines[3].split() == ["8,000", "60.0", "(0.48)", "240.0", "(0.96)", "!"]


def test_own_cost_is_serve_minus_its_floor_at_the_same_rate_and_unread_past_a_maximum():
    points = [point("granian w1 t8", 1000, 1000, 150.0), point("hello granian w1 t8", 1000, 1000, 110.0, "granian w1 t8"),
              point("gevent w1", 1000, 1000, 330.0),   # no floor: no own cost
              point("granian w1 t8", 8000, 8000, 60.0), point("hello granian w1 t8", 8000, 8000, 45.0, "granian w1 t8"),
              point("granian w1 t8", 16000, 12000, 80.0),
              point("hello granian w1 t8", 16000, 16000, 30.0, "granian w1 t8")]
    assert own_costs(points) == {(1000, "granian w1 t8"): 40.0, (8000, "granian w1 t8"): 15.0,
                                 (16000, "granian w1 t8"): None}
    lines = cost_curve_table(points).splitlines()
    start = lines.index("ServeApp's own CPU per request (us): serve minus its front end's hello world at the same rate")
    assert lines[start + 1].split() == ["req/s", "granian", "w1", "t8"]
    assert [line.split() for line in lines[start + 2:]] == [["1,000", "40.0"], ["8,000", "15.0"], ["16,000", "-"]]


def test_without_floors_the_table_has_no_own_cost():
    table = cost_curve_table([point("granian w1 t8", 1000, 1000, 150.0)])
    assert "own CPU" not in table
