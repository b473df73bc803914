"""Servers (a), (b) and (d) side by side, for real and briefly: the chain works end to end.

Rates are not asserted against each other here (timed tests on a shared machine are
noise); the benchmark prints them. What is checked: each server starts under the
configuration asked for, answers every request without error, and the search
reports a rate it really held.
"""
from __future__ import annotations

import dataclasses

import requests

from bench.compare import HEADROOM_RUNS, run_compare
from bench.contenders import hello_command, serve_command
from bench.payloads import read_sample_rows
from bench.servers import free_port, running_server
from serve.gunicorn_conf import WorkerPlan


def test_serve_and_hello_world_run_under_the_same_gunicorn_plan(deployed_model, tmp_path):
    model = deployed_model("rtb-small")
    plan = WorkerPlan("gthread", 1, 2)
    line = read_sample_rows(model.sample_csv)[0]
    port = free_port()
    command = serve_command("a", model.deployed, port, plan)
    with running_server("a", command.argv, port, env=command.env, log_dir=tmp_path) as server:
        answer = requests.post(server.url + "/invocations", data=line, headers={"Content-Type": "text/csv"},
                               timeout=10)
        workers = [p for p in __import__("psutil").Process(server.proc.pid).children(recursive=True)]
    assert answer.status_code == 200 and 0 < float(answer.text) < 1
    assert len(workers) == 1                     # --workers reached gunicorn
    port = free_port()
    command = hello_command(port, plan)
    with running_server("d", command.argv, port, env=command.env, log_dir=tmp_path) as server:
        answer = requests.post(server.url + "/invocations", data=line, timeout=10)
        workers = [p for p in __import__("psutil").Process(server.proc.pid).children(recursive=True)]
    assert (answer.status_code, answer.text) == (200, "0.5\n") and len(workers) == 1


def test_context_switches_count_every_thread_of_every_worker(deployed_model, tmp_path):
    """gunicorn's gthread worker answers in its pool threads: the count must include them, and
    each request one after another on a keep-alive connection wakes the worker at least once."""
    import http.client

    import psutil

    model = deployed_model("rtb-small")
    line = read_sample_rows(model.sample_csv)[0]
    port = free_port()
    command = serve_command("a", model.deployed, port, WorkerPlan("gthread", 1, 2))
    with running_server("a", command.argv, port, env=command.env, log_dir=tmp_path) as server:
        processes = [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(recursive=True)]

        def main_threads_only():   # what each process's own status line counts
            return sum(sum(p.num_ctx_switches()) for p in processes)

        before, main_before = server.context_switches(), main_threads_only()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(50):
            connection.request("POST", "/invocations", body=line, headers={"Content-Type": "text/csv"})
            assert connection.getresponse().read()
        connection.close()
        switches, main_switches = server.context_switches() - before, main_threads_only() - main_before
    assert switches >= 50 and switches > main_switches


def test_compare_finds_a_held_rate_for_each_server(deployed_model, tmp_path):
    """Two models (here the same one under a second name): every server of both takes turns in one
    search, each server's runs its own, though key (a) recurs."""
    model = deployed_model("rtb-small")
    again = dataclasses.replace(model, name="rtb-again")
    lines = []
    # a loose SLO: this checks the chain, not the speed (other jobs share this machine's 2 cores)
    results = run_compare([model, again], plan=WorkerPlan("gevent", 1), keys=("a", "b"), slo_ms=500,
                          duration_s=1, steps=2, connections=4, log_dir=tmp_path, progress=lines.append)
    assert [(r.key, r.model) for r in results] == [("a", "rtb-small"), ("b", "rtb-small"), ("a", "rtb-again"),
                                                   ("b", "rtb-again")]
    # taking turns: the second model's servers ran their closed loop before the first's first open-loop run
    runs_of = {name: [i for i, line in enumerate(lines) if line.lstrip().startswith(f"a gevent w1 {name}")]
               for name in ("rtb-small", "rtb-again")}
    assert runs_of["rtb-small"] and runs_of["rtb-again"] and runs_of["rtb-again"][0] < runs_of["rtb-small"][1]
    assert results[2].p99s_at_headroom_ms and len(results[2].p99s_at_headroom_ms) == HEADROOM_RUNS
    results = results[:2]
    for r in results:
        assert r.closed_rate > 0 and r.search["closed"]["errors"] == 0
        assert r.max_rate > 0, r.search["trials"]
        best = r.search["best"]
        assert best["sustained"] and best["errors"] == 0 and best["latency_ms"]["p99"] <= 500
        assert best["offered_rate"] == r.max_rate and r.cpu_us_per_request > 0 and r.switches_per_request > 0
    # serve's own row (a) also ran HEADROOM_RUNS times at 80 % of its max rate, the figure their median,
    # with its CPU counted; (b) did not run there.
    runs = results[0].p99s_at_headroom_ms
    assert len(runs) == HEADROOM_RUNS and results[0].p99_at_headroom_ms == sorted(runs)[1]
    assert results[1].p99_at_headroom_ms is None and results[1].p99s_at_headroom_ms is None
    expected_busy = 0.8 * results[0].max_rate * results[0].cpu_us_per_request / 1e6
    assert 0.3 * expected_busy < results[0].vcpus_busy_at_headroom < 3 * expected_busy
    assert results[1].vcpus_busy_at_headroom is None
    # the host's steal of the server's vCPUs, read around the run at the max rate and each run at 80 %
    assert all(0 <= steal <= 1 for steal in results[0].steals_at_headroom) and len(results[0].steals_at_headroom) == 3
    assert 0 <= results[0].steal_at_max <= 1 and results[1].steals_at_headroom is None
    # the generator alone at (a)'s rate at 80 %, against the trivial endpoint; none for (b)
    assert results[0].generator_p99_at_headroom_ms > 0 and results[1].generator_p99_at_headroom_ms is None


def test_the_unread_body_hello_world_runs_on_granian_rsgi_and_keeps_its_connections(deployed_model, tmp_path):
    """(i) answers without reading the body; granian must still keep the connection alive, or (d) minus
    (i) would measure reconnects rather than the body read. Each request goes out in one write, as
    wrk sends them: http.client writes headers and body apart, and its second request once found
    the connection closed (a body that comes after the answer is not one granian waits for)."""
    import http.client
    import socket

    from bench.contenders import granian_plan

    plan = granian_plan(WorkerPlan("gevent", 1), "rsgi")
    assert (plan.frontend, plan.interface, plan.workers) == ("granian", "rsgi", 1)
    line = read_sample_rows(deployed_model("rtb-small").sample_csv)[0].encode()
    request = (b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(line), line))
    port = free_port()
    command = hello_command(port, plan, app="bench.baselines:hello_unread_app", key="i")
    with running_server("i", command.argv, port, env=command.env, log_dir=tmp_path):
        answers = []
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:   # one connection throughout
            for _ in range(3):
                sock.sendall(request)
                response = http.client.HTTPResponse(sock)
                response.begin()
                answers.append((response.status, response.read(), response.getheader("connection")))
    assert answers == [(200, b"0.5\n", None)] * 3


def test_sweep_keeps_each_configurations_runs_apart(deployed_model, tmp_path):
    """The sweep runs server (a) under several plans at once, all of key (a): each result holds its
    own HEADROOM_RUNS runs at 80 % of its own max rate, not every plan's."""
    from bench.sweep import run_sweep

    plans = [WorkerPlan("gevent", 1), WorkerPlan("sync", 1)]
    results = run_sweep(deployed_model("rtb-small"), plans, rows_list=(1,), slo_ms=500, duration_s=1, steps=2,
                        connections=4, log_dir=tmp_path, progress=lambda line: None)
    assert [r.config for r in results] == [plan.label() for plan in plans]
    for r in results:
        assert r.max_rate > 0 and len(r.p99s_at_headroom_ms) == HEADROOM_RUNS
        assert r.p99_at_headroom_ms == sorted(r.p99s_at_headroom_ms)[1]
