"""The command line, run as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys

from bench.load import trivial_server


def run_bench(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=timeout)


def test_load_any_url_open_loop(tmp_path):
    sample = tmp_path / "rows.csv"
    sample.write_text("1,2,3\n4,,6\n")
    out = tmp_path / "result.json"
    with trivial_server(delay_ms=2) as url:
        done = run_bench("load", url, "--sample", str(sample), "--rate", "100", "--duration", "1",
                         "--connections", "2", "--warmup", "0", "--json", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["mode"] == "open" and result["errors"] == 0 and result["requests"] >= 80
    assert 2.0 <= result["latency_ms"]["p50"] < 10.0
    assert "offered      100/s" in done.stdout


def test_capacity_from_a_figure():
    done = run_bench("capacity", "--rps-per-vcpu", "1000", "--target-rps", "100000")
    assert done.returncode == 0, done.stderr
    assert "ml.c5.xlarge" in done.stdout and "NOT verified" in done.stdout


def test_bad_arguments_get_a_clear_error():
    done = run_bench("sweep", "--configs", "tornado:2")
    assert done.returncode == 2 and "CLASS:WORKERS" in done.stderr
    done = run_bench("capacity", "--rps-per-vcpu", "0")
    assert done.returncode == 1 and "rps_per_vcpu must be positive" in done.stderr


def test_capacity_from_a_report_uses_server_a_as_compared(tmp_path):
    def a(model, config, rate, cpu):
        return {"key": "a", "label": "(a)", "model": model, "rows": 1, "config": config, "max_rate": rate,
                "p50_ms": 1.0, "p99_ms": 5.0, "closed_rate": rate, "closed_p99_ms": 9.0, "cpu_us_per_request": cpu,
                "near_ceiling": False, "loadavg": [], "search": {}}
    recommended = {"worker_class": "gevent", "workers_per_vcpu": 1.0, "threads": 1, "rates": {}, "reason": "r"}
    report = {"machine": {"cpus": 2},
              "http": [a("m", "gevent w2", 4000.0, 250.0), dict(a("m", "gevent w2", 900.0, 900.0), key="c")],
              "sweep": {"model": "m", "recommendation": dict(recommended, config="gevent w2"),
                        "results": [a("m", "gevent w2", 6000.0, 240.0), a("m", "sync w2", 7000.0, 230.0)]}}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    done = run_bench("capacity", "--report", str(path), "--target-rps", "1000000")
    assert done.returncode == 0, done.stderr
    assert "2,000 req/s per vCPU" in done.stdout            # 4,000 on 2 vCPUs: the comparison, not the sweep's luck
    assert "4,000 req/s per vCPU at 100 % CPU" in done.stdout     # 1e6 / 250 us
    report["sweep"]["recommendation"]["config"] = "sync w2"       # the sweep recommends another plan: its run
    path.write_text(json.dumps(report))
    assert "3,500 req/s per vCPU" in run_bench("capacity", "--report", str(path)).stdout


def test_a_file_that_is_no_report_gets_a_clear_error(tmp_path):
    path = tmp_path / "report.json"
    for content in ('[1]', '{"settings": {"slo_ms": 20}, "http": [{"key": "a"}]}', '{"surprise": 1}'):
        path.write_text(content)
        done = run_bench("report", str(path), "--out", str(tmp_path / "out"))
        assert done.returncode == 1 and done.stderr.startswith("bench: ") and "Traceback" not in done.stderr
        assert "report" in done.stderr
