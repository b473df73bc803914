"""Real servers with compiled artifacts: answers equal to in-process predictions on every
batch size (the router's both sides), concurrent threads without cross-talk, selectable
outputs, a corrupted library served by stock XGBoost, and SIGTERM under load."""
import json
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import xgboost as xgb

from model_core.artifact import LIBRARY_NAME, MANIFEST_NAME, MODEL_NAME
from serve.loading import load_model
from tests.serve.conftest import (FRONTENDS, check_concurrent_clients, csv_body, numbers, running_server, sample_rows,
                                  settled_worker_pids)


@pytest.fixture(scope="module")
def small(compiled_model_dir, sample_model_dir):
    """(artifact folder, CSV lines, rows, expect) where expect(row indices) is the in-process
    prediction for those rows sent as one request (the router picks its side by batch size,
    and the two sides may differ in the last bit)."""
    folder = compiled_model_dir("rtb-small")
    rows, lines = sample_rows(sample_model_dir, "rtb-small")
    predictor = load_model(folder).predictor
    return folder, lines, rows, lambda picked: predictor.predict(np.ascontiguousarray(rows[picked]))


def test_compiled_server_with_threads(small, tmp_path):
    """gthread workers: real threads share one compiled library per process. The crossover is
    set to 3 rows (the measured one varies from run to run), so that the concurrent clients'
    1-5 row requests go to both sides of the router."""
    folder, lines, rows, _ = small
    routed = tmp_path / "model"
    shutil.copytree(folder, routed)
    manifest = json.loads((routed / MANIFEST_NAME).read_text())
    (routed / MANIFEST_NAME).write_text(json.dumps({**manifest, "crossover_batch_size": 3}))
    predictor = load_model(routed).predictor

    def expect(picked):
        return predictor.predict(np.ascontiguousarray(rows[picked]))

    with running_server(routed, tmp_path / "server.log", SERVE_WORKER_CLASS="gthread", SERVE_THREADS="4") as server:
        assert "predictor router(compiled below 3 rows, stock from 3)" in server.log()
        assert "gthread worker(s) x 4 threads" in server.log()
        with requests.Session() as session:
            for i in range(30):
                assert np.array_equal(numbers(server.invoke(lines[i], session=session)), expect([i]))
        for size in (2, 3, len(lines)):
            assert np.array_equal(numbers(server.invoke(csv_body(lines[:size]))), expect(np.arange(size)))
        assert check_concurrent_clients(server, lines, expect, seed=1) == 16 * 15
    reference = xgb.Booster(model_file=str(folder / MODEL_NAME)).inplace_predict(rows)
    one_by_one = np.concatenate([expect([i]) for i in range(len(rows))])
    assert np.max(np.abs(one_by_one - reference)) < 1e-5
    assert not np.array_equal(one_by_one, reference)   # the library answered the one-row requests


def test_selected_outputs_batch_mode_and_worker_count(small, tmp_path):
    folder, lines, _, expect = small
    env = {"SAGEMAKER_INFERENCE_OUTPUT": "predicted_label,probability,probabilities",
           "SERVE_DECISION_THRESHOLD": "0.2", "SAGEMAKER_BATCH": "true",
           "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "application/json", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1",
           "SAGEMAKER_MODEL_SERVER_WORKERS": "3"}
    with running_server(folder, tmp_path / "server.log", **env) as server:
        assert len(settled_worker_pids(server)) == 3
        assert requests.get(server.url + "/execution-parameters", timeout=5).json() == {
            "MaxConcurrentTransforms": 3, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 1}
        predictions = server.invoke(csv_body(lines[:50])).json()["predictions"]
        probability = expect(np.arange(50))
        assert [p["predicted_label"] for p in predictions] == (probability > 0.2).astype(int).tolist()
        assert np.array_equal(np.array([p["probability"] for p in predictions], dtype=np.float32), probability)
        assert np.allclose([p["probabilities"] for p in predictions], np.column_stack((1 - probability, probability)))
        assert 0 < sum(p["predicted_label"] for p in predictions) < 50
        as_csv = server.invoke(csv_body(lines[:2]), accept="text/csv").text
        assert as_csv.endswith("\n") and as_csv.count("\n") == 2
        label, prob, probs = as_csv.splitlines()[0].split(",", 2)
        first = expect(np.arange(2))[0]
        assert int(label) == int(first > 0.2) and np.float32(prob) == first
        assert probs.startswith('"[') and probs.endswith(']"')
        assert len(csv_body(lines) * 40) > 1024 * 1024
        assert server.invoke(csv_body(lines) * 40).status_code == 413


def test_a_corrupted_library_is_served_by_stock_xgboost(small, tmp_path):
    folder, lines, rows, _ = small
    damaged = tmp_path / "model"
    shutil.copytree(folder, damaged)
    library = damaged / LIBRARY_NAME
    library.write_bytes(library.read_bytes()[: library.stat().st_size // 2])
    with running_server(damaged, tmp_path / "server.log") as server:
        log = server.log()
        assert log.count("COMPILED LIBRARY NOT USED") == 1 and "checksum" in log
        assert "predictor stock for compiled artifact" in log
        reference = xgb.Booster(model_file=str(damaged / MODEL_NAME)).inplace_predict(rows[:100])
        assert np.array_equal(numbers(server.invoke(csv_body(lines[:100]))), reference)


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_sigterm_under_load_loses_no_accepted_request(small, tmp_path, frontend):
    """Big requests in flight and one-row clients running when SIGTERM comes: every accepted
    request is answered in full and correctly, later ones are refused at connect, and the
    server exits 0 well within SageMaker's 30 s."""
    folder, lines, _, expect = small
    big_repeats = 40
    big_body = csv_body(lines) * big_repeats
    # Predicted as one batch of the same size, so that the router picks the same predictor
    # as the server does for it (past the crossover: stock XGBoost).
    big_expected = expect(np.tile(np.arange(len(lines)), big_repeats))
    stop = time.monotonic() + 30

    def big_request() -> np.ndarray:
        return numbers(server.invoke(big_body))

    def one_row_client(number: int) -> tuple[int, int]:
        answered = refused = 0
        with requests.Session() as session:
            while time.monotonic() < stop:
                i = (number * 7 + answered) % len(lines)
                try:
                    response = server.invoke(lines[i], session=session)
                except requests.ConnectionError:
                    refused += 1
                    if server.process.poll() is not None:
                        break
                    continue
                assert response.status_code == 200, response.text
                assert np.array_equal(numbers(response), expect([i]))
                answered += 1
        return answered, refused

    with running_server(folder, tmp_path / "server.log", SERVE_FRONTEND=frontend) as server:
        with ThreadPoolExecutor(10) as pool:
            clients = [pool.submit(one_row_client, n) for n in range(4)]
            time.sleep(1.0)
            in_flight = [pool.submit(big_request) for _ in range(6)]
            time.sleep(1.0)   # the workers accept and start reading at once
            sent_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            for future in in_flight:
                assert np.array_equal(future.result(), big_expected)
            exit_code = server.process.wait(timeout=30)
            stopped_in = time.monotonic() - sent_at
            results = [c.result() for c in clients]
        assert exit_code == 0, server.log()[-2000:]
    assert stopped_in < 25
    assert all(answered > 0 for answered, _ in results)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/ping", timeout=2)
    print(f"SIGTERM: {len(in_flight)} big requests in flight completed, one-row clients "
          f"{results} (answered, refused), stopped in {stopped_in:.1f} s")
