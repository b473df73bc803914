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
