"""rtb-large (60 features, 300 trees of depth 8, 8.6 % missing values), bare and compiled,
served for real: answers equal in-process predictions, missing values included."""
import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import xgboost as xgb

from model_core.artifact import MODEL_NAME
from serve.loading import load_model
from tests.serve.conftest import FRONTENDS, csv_body, numbers, running_server, sample_rows, settled_worker_pids

N_ONE_ROW = 20


def check_answers(server, lines, rows, predictor):
    """One-row requests, a 300-row request and the whole sample: each equal to the in-process
    predictor on the same rows; JSON with nulls gives the same as CSV with empty fields."""
    def expect(picked):
        return predictor.predict(np.ascontiguousarray(rows[picked]))

    with requests.Session() as session:
        for i in range(N_ONE_ROW):
            assert np.array_equal(numbers(server.invoke(lines[i], session=session)), expect([i]))
    for size in (300, len(lines)):
        assert np.array_equal(numbers(server.invoke(csv_body(lines[:size]))), expect(np.arange(size)))
    with_missing = [i for i in range(len(lines)) if ",," in lines[i]][:50]
    assert len(with_missing) == 50
    as_json = json.dumps([[None if v != v else v for v in rows[i].tolist()] for i in with_missing])
    assert np.array_equal(numbers(server.invoke(as_json, content_type="application/json")), expect(with_missing))


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_bare_large_model_from_a_tarball_on_one_cpu(sample_model_dir, bare_model_dir, tmp_path, frontend):
    """`serve --model model.tar.gz` (a local run), the process pinned to one CPU: one worker,
    replaced when it dies."""
    rows, lines = sample_rows(sample_model_dir, "rtb-large")
    tarball = sample_model_dir("rtb-large") / "model.tar.gz"
    one_cpu = {min(os.sched_getaffinity(0))}
    with running_server(tmp_path / "unused", tmp_path / "server.log", args=("serve", "--model", str(tarball),
                        "--frontend", frontend), cpus=one_cpu) as server:
        assert len(settled_worker_pids(server)) == 1
        expected = "granian (WSGI), 1 worker(s) x 8 threads" if frontend == "granian" else "1 gevent worker(s)"
        assert expected in server.log() and "for 1 usable vCPU(s)" in server.log()
        check_answers(server, lines, rows, load_model(bare_model_dir("rtb-large")).predictor)
        extracted = Path(re.search(r"bare model (\S+)/xgboost-model", server.log()).group(1))
        # A worker that dies (and is replaced) leaves the master's extracted model alone.
        (worker,) = settled_worker_pids(server)
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while settled_worker_pids(server) in ([], [worker]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert settled_worker_pids(server) not in ([], [worker])
        assert extracted.is_dir()
        assert np.array_equal(numbers(server.invoke(lines[0])), load_model(extracted).predictor.predict(rows[:1]))
    assert not extracted.exists()   # the master removed its scratch copy on the way out


def test_compiled_large_model(sample_model_dir, compiled_model_dir, tmp_path):
    rows, lines = sample_rows(sample_model_dir, "rtb-large")
    folder = compiled_model_dir("rtb-large")
    predictor = load_model(folder).predictor
    assert predictor.name != "stock"
    with running_server(folder, tmp_path / "server.log") as server:
        check_answers(server, lines, rows, predictor)
    reference = xgb.Booster(model_file=str(folder / MODEL_NAME)).inplace_predict(rows)
    one_by_one = np.concatenate([predictor.predict(rows[i:i + 1]) for i in range(len(rows))])
    assert np.max(np.abs(one_by_one - reference)) < 1e-5
