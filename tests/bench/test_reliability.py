"""bench.reliability and bench.fuzz: the bounded version of every scenario of
`python -m bench reliability`, against a real `serve` on loopback serving the compiled
rtb-small artifact (fuzz: at least 10,000 requests; soak: 60 s), on serve's default front
end (granian) and, where it takes seconds, on gunicorn + gevent as well."""
import json

import numpy as np
import pytest

from bench import fuzz, reliability
from bench.search import DEFAULT_CONNECTIONS, open_loop_connections
from serve.gunicorn_conf import DEFAULT_FRONTEND

BOTH = pytest.mark.parametrize("frontend", ["granian", "gunicorn"])


@pytest.fixture(scope="module")
def model(deployed_model):
    m = deployed_model("rtb-small")
    return m, json.loads((m.source.parent / "metadata.json").read_text())["n_features"]


def test_cases_are_reproducible_and_cover_every_content_type():
    first = [fuzz.make_case(7, i, 7) for i in range(600)]
    assert first == [fuzz.make_case(7, i, 7) for i in range(600)]
    assert first != [fuzz.make_case(8, i, 7) for i in range(600)]
    types = {dict(c.headers).get("Content-Type") for c in first if c.expect_ok}
    assert types == set(fuzz.CONTENT_TYPES)
    assert {c.framing for c in first} == {"length", "chunked", "short"}
    assert fuzz.Case.from_dict(json.loads(json.dumps(first[5].to_dict()))) == first[5]


def test_valid_cases_decode_to_the_model_width():
    from serve import codecs

    for case in (fuzz.make_case(3, i, 7) for i in range(400)):
        if case.expect_ok:
            rows = codecs.decoder_for(dict(case.headers)["Content-Type"])(case.body, 7)
            assert rows.shape[1] == 7 and rows.dtype == np.float32


def test_the_default_front_end_is_the_one_tested_first():
    assert DEFAULT_FRONTEND == "granian"


@BOTH
def test_fuzz_10000_requests(model, tmp_path, frontend):
    artifact, num_feature = model
    row = reliability.scenario_fuzz(artifact.deployed, tmp_path, num_feature=num_feature, count=10_000, seed=12,
                                    frontend=frontend, progress=lambda line: None)
    counts = row.counts
    assert counts["requests"] == 10_000
    # the oracle saw every kind of answer: valid requests served, bad ones refused
    assert counts["statuses"]["200"] > 500 and counts["statuses"]["400"] > 3000
    assert counts["server_errors"] == 0 and counts["worker_deaths"] == 0 and counts["logged_internal_errors"] == 0
    assert counts["ping"]["failures"] == 0 and counts["server_exit_code"] is None
    assert row.passed, counts


def test_replay_sends_saved_cases_again(model, tmp_path):
    artifact, num_feature = model
    bad = fuzz.Case(0, "text/csv valid", "POST", "/invocations", (("Content-Type", "text/csv"),), b"1,2", expect_ok=True)
    saved = tmp_path / "failures.jsonl"
    saved.write_text(json.dumps({"problem": "made up", "case": bad.to_dict()}) + "\n")
    with reliability.serve(artifact.deployed, tmp_path, "replay") as server:
        (case, answer, wrong), = fuzz.replay(server.url, saved)
    assert case == bad and answer.status == 400 and "refused with 400" in wrong


@pytest.mark.parametrize("frontend", ["granian", "granian-rsgi", "gunicorn"])
def test_slow_and_idle_clients_are_closed_by_the_timeouts(model, tmp_path, frontend):
    artifact, num_feature = model
    row = reliability.scenario_slow(artifact.deployed, tmp_path, num_feature=num_feature, slow=30, keepalive_s=3,
                                    body_timeout_s=3, frontend=frontend)
    kinds = row.counts["kinds"]
    assert kinds["stalled_body"]["timeout"] == "SAGEMAKER_MODEL_SERVER_TIMEOUT=3 s"
    assert kinds["silent"]["timeout"] == "SERVE_KEEPALIVE=3 s"
    for kind in ("headers_byte_by_byte", "silent"):   # granian's header read timeout is SERVE_KEEPALIVE
        assert kinds[kind]["closed_in_time"] == kinds[kind]["connections"] == 10, kinds
    counts = row.counts
    # each part on its own, so that a failure says which (the whole dict is cut short in the output)
    assert counts["normal_failed"] == 0, counts["normal_errors"]
    assert counts["normal_p99_ms"] <= reliability.SLO_MS and counts["ping"]["failures"] == 0, counts
    assert counts["server_exit_code"] is None
    assert row.passed, counts
    assert row.counts["closed_by_kind"] == {"headers_byte_by_byte": 10, "stalled_body": 10, "silent": 10}
    assert row.counts["max_close_s"] < 10


@BOTH
def test_worker_killed_under_load(model, tmp_path, frontend):
    artifact, num_feature = model
    row = reliability.scenario_kill(artifact.deployed, tmp_path, num_feature=num_feature, kills=1, frontend=frontend)
    assert row.passed, row.counts
    assert row.counts["requests"] > 100 and row.counts["max_recovery_s"] < 30


@BOTH
def test_worker_killed_again_soon_after_its_restart(model, tmp_path, frontend):
    artifact, num_feature = model
    row = reliability.scenario_kill_again(artifact.deployed, tmp_path, num_feature=num_feature, frontend=frontend)
    assert row.passed, row.counts
    assert row.counts["again_after_s"] < reliability.CRASH_LOOP_WINDOW_S
    assert row.counts["requests"] > 100


@BOTH
def test_sigterm_under_load(model, tmp_path, frontend):
    artifact, num_feature = model
    row = reliability.scenario_sigterm(artifact.deployed, tmp_path, num_feature=num_feature, graceful_s=20,
                                       frontend=frontend)
    assert row.passed, row.counts
    assert row.counts["requests_before_signal"] > 100


def test_soak_60_seconds(model, tmp_path):
    artifact, _ = model
    row = reliability.scenario_soak(artifact.deployed, tmp_path, sample_csv=artifact.sample_csv, soak_s=60)
    assert row.passed, row.counts
    assert row.counts["duration_s"] == 60
    # the rate is the benchmark's (70 % of the searched max), on the benchmark's connections for it
    rate = row.counts["rate"]
    assert abs(rate - reliability.SOAK_SHARE * row.counts["benchmark_max_rate"]) <= 1   # both rounded
    assert row.counts["connections"] in {open_loop_connections(r, DEFAULT_CONNECTIONS) for r in (rate - 1, rate + 1)}
    assert all(segment["achieved_rate"] > 0.9 * row.counts["rate"] for segment in row.counts["segments"])


def test_six_mb_bodies_of_every_type(model, tmp_path):
    artifact, num_feature = model
    row = reliability.scenario_memory(artifact.deployed, tmp_path, num_feature=num_feature, rounds=1)
    assert row.passed, row.counts
    assert set(row.counts["body_mb"]) == set(fuzz.CONTENT_TYPES)
    assert all(5.5 < mb <= 6.0 for mb in row.counts["body_mb"].values())
    assert all(statuses == [200] for statuses in row.counts["statuses"].values()), row.counts["statuses"]


def test_memory_limit_is_skipped_saying_why_without_a_docker_engine(tmp_path, monkeypatch):
    # the scenario itself runs in tests/image/test_image_memory_limit.py, against the image
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    row = reliability.scenario_memory_limit(tmp_path, tmp_path, num_feature=7, image="xgb-neo-serve:latest")
    assert row.passed and "no Docker engine answers" in row.counts["skipped"]
    assert "skip" in reliability.table([row]) and "no Docker engine" in reliability.table([row])
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "no docker command" in reliability.scenario_memory_limit(tmp_path, tmp_path, num_feature=7,
                                                                    image="x").counts["skipped"]


def test_a_request_lost_on_a_connection_closed_unannounced_names_the_case_before_it():
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def answer_once_then_close():   # as granian did after a refusal that left the body unread
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b'HTTP/1.1 415 Unsupported Media Type\r\nContent-Type: application/json\r\n'
                     b'Content-Length: 15\r\n\r\n{"error": "no"}')
        conn.close()

    threading.Thread(target=answer_once_then_close, daemon=True).start()
    connection = fuzz.Connection(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=5)
    first = fuzz.Case(7, "text/csv other-type", "POST", "/invocations", (("Content-Type", "text/foo"),), b"1,2")
    second = fuzz.Case(8, "text/csv valid", "POST", "/invocations", (("Content-Type", "text/csv"),), b"1,2",
                       expect_ok=True)
    answer = connection.send(first)
    assert answer.status == 415 and not answer.will_close and fuzz.problem(first, answer) is None
    lost = connection.send(second)
    assert lost.status is None and lost.after == first
    assert "closed after the answer to case 7 (text/csv other-type)" in fuzz.problem(second, lost)
    listener.close()


def test_only_an_empty_400_that_closes_is_an_http_layer_refusal():
    assert fuzz.Answer(400, "", b"", will_close=True).http_layer_refusal
    assert not fuzz.Answer(400, "", b"", will_close=False).http_layer_refusal
    assert not fuzz.Answer(400, "application/json", b'{"error": "x"}', will_close=True).http_layer_refusal
    assert not fuzz.Answer(500, "", b"", will_close=True).http_layer_refusal
