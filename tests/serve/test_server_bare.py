"""A real server with a bare model (SageMaker's xgboost-model, no compiled artifact), on each
front end: every route, request format, Accept value and error case, against in-process
predictions; keep-alive, 413 before the body is sent, /ping while workers compute."""
import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from serve.cpus import available_cpus, usable_cpu_count
from serve.loading import load_model
from serve.scheduling import current_policy
from tests.serve.conftest import (FRONTEND_MODES, FRONTENDS, check_concurrent_clients, csv_body, numbers, running_server, sample_rows,
                                  settled_worker_pids, worker_pids)

N_ROWS = 40


@pytest.fixture(scope="module", params=list(FRONTEND_MODES))
def server(request, bare_model_dir, tmp_path_factory):
    """The same server on each front end (and granian's WSGI interface): every test below holds for all."""
    with running_server(bare_model_dir("rtb-small"), tmp_path_factory.mktemp("bare") / "server.log",
                        **FRONTEND_MODES[request.param]) as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(bare_model_dir, sample_model_dir):
    """(rows, CSV lines, in-process predictions of the same predictor) for the sample."""
    rows, lines = sample_rows(sample_model_dir, "rtb-small")
    loaded = load_model(bare_model_dir("rtb-small"))
    assert loaded.predictor.name == "stock"
    return rows, lines, loaded.predictor.predict(rows)


def test_ping_is_empty_200_and_execution_parameters(server):
    response = requests.get(server.url + "/ping", timeout=2)
    assert response.status_code == 200 and response.content == b""
    parameters = requests.get(server.url + "/execution-parameters", timeout=2).json()
    workers = usable_cpu_count(available_cpus())
    assert parameters == {"MaxConcurrentTransforms": workers, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}
    assert len(settled_worker_pids(server)) == workers
    assert "predictor stock for bare model" in server.log()


def test_one_row_requests_equal_in_process_predictions(server, reference):
    _, lines, expected = reference
    with requests.Session() as session:
        for i in range(N_ROWS):
            response = server.invoke(lines[i], session=session)
            assert response.headers["Content-Type"] == "text/csv"
            assert np.array_equal(numbers(response), expected[i:i + 1])


def libsvm_lines(rows: np.ndarray) -> list[str]:
    return ["0 " + " ".join(f"{j}:{v!r}" for j, v in enumerate(row.tolist()) if v == v) for row in rows]


def test_every_request_format_gives_the_same_predictions(server, reference):
    rows, lines, expected = reference
    rows, lines, expected = rows[:N_ROWS], lines[:N_ROWS], expected[:N_ROWS]
    as_lists = [[None if v != v else v for v in row] for row in rows.tolist()]
    npy = io.BytesIO()
    np.save(npy, rows)
    bodies = {
        "text/csv": csv_body(lines),
        "text/csv; label_size=1": csv_body(["1," + line for line in lines]),
        "application/json": json.dumps(as_lists),
        "application/json; charset=utf-8": json.dumps({"instances": [{"features": r} for r in as_lists]}),
        "application/jsonlines": "\n".join(json.dumps(r) for r in as_lists),
        "application/x-npy": npy.getvalue(),
        "text/libsvm": "\n".join(libsvm_lines(rows)),
    }
    for content_type, body in bodies.items():
        response = server.invoke(body, content_type=content_type)
        assert np.array_equal(numbers(response), expected), content_type
    one_row = server.invoke(json.dumps({"features": as_lists[3]}), content_type="application/json")
    assert np.array_equal(numbers(one_row), expected[3:4])


def test_every_accept_value(server, reference):
    _, lines, expected = reference
    body = csv_body(lines[:3])
    as_json = server.invoke(body, accept="application/json")
    assert as_json.headers["Content-Type"] == "application/json"
    assert np.array_equal(np.array([p["score"] for p in as_json.json()["predictions"]], dtype=np.float32), expected[:3])
    as_lines = server.invoke(body, accept="application/jsonlines")
    assert as_lines.headers["Content-Type"] == "application/jsonlines"
    assert [json.loads(line) for line in as_lines.text.splitlines()] == as_json.json()["predictions"]
    for accept in (None, "*/*", "text/csv", "text/html;q=0.9, text/csv"):
        response = server.invoke(body, accept=accept)
        assert response.headers["Content-Type"] == "text/csv" and np.array_equal(numbers(response), expected[:3])
    assert server.invoke(body, accept="text/html").status_code == 406


def test_errors_are_short_json_with_the_right_status(server, reference):
    _, lines, _ = reference
    pids_before = worker_pids(server)
    cases = [
        (415, server.invoke(lines[0], content_type=None), "Content-Type"),
        (415, server.invoke(lines[0], content_type="image/png"), "not supported"),
        (400, server.invoke(lines[0], content_type="application/x-recordio-protobuf"), "not a RecordIO frame"),
        (406, server.invoke(lines[0], accept="application/x-recordio-protobuf"), "Accept"),
        (400, server.invoke(lines[0] + "\n" + lines[1].replace(",", ",x", 1)), "row 2, column 2"),
        (400, server.invoke("1,2,3"), "must have 7 values"),
        (400, server.invoke(b""), "empty"),
        (400, server.invoke("[1, 2", content_type="application/json"), "not valid JSON"),
        (413, server.invoke(b"1," * (3 * 1024 * 1024 + 1)), "over the limit"),
        (404, requests.get(server.url + "/nothing", timeout=5), "Not Found"),
        (405, requests.get(server.url + "/invocations", timeout=5), "POST"),
        (405, requests.post(server.url + "/ping", timeout=5), "not allowed"),
    ]
    for status, response, text in cases:
        assert response.status_code == status, (status, response.text)
        assert response.headers["Content-Type"] == "application/json"
        message = response.json()["error"]
        assert text.lower() in message.lower() and len(message) < 300
        assert "Traceback" not in response.text
    # No bad request killed or restarted a worker, and the server still answers.
    assert worker_pids(server) == pids_before
    assert server.invoke(lines[0]).status_code == 200


def test_chunked_bodies_are_read_and_limited(server, reference):
    _, lines, expected = reference
    response = server.invoke(iter([lines[0].encode(), b"\n", lines[1].encode()]))
    assert np.array_equal(numbers(response), expected[:2])
    too_big = server.invoke(iter([b"1," * (1024 * 1024)] * 4))
    assert too_big.status_code == 413


def test_a_6mb_payload(server, reference, sample_model_dir):
    rows, lines, expected = reference
    repeats = (6 * 1024 * 1024 - 4096) // len(csv_body(lines).encode())
    body = csv_body(lines) * repeats
    assert len(body) <= 6 * 1024 * 1024
    started = time.perf_counter()
    response = server.invoke(body)
    elapsed = time.perf_counter() - started
    got = numbers(response)
    assert got.shape == (len(lines) * repeats,)
    assert np.array_equal(got, np.tile(expected, repeats))
    print(f"6 MB CSV ({len(lines) * repeats} rows), stock XGBoost: {elapsed:.2f} s")


def test_concurrent_clients_get_their_own_answers(server, reference):
    _, lines, expected = reference
    assert check_concurrent_clients(server, lines, lambda picked: expected[picked]) == 16 * 15


LOAD_CLIENT = """
import http.client, sys, time
host, port, path, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
body = open(path, "rb").read()
stop, done = time.monotonic() + seconds, 0
connection = http.client.HTTPConnection(host, port, timeout=60)
while time.monotonic() < stop:
    connection.request("POST", "/invocations", body, {"Content-Type": "text/csv"})
    response = connection.getresponse()
    response.read()
    assert response.status == 200, response.status
    done += 1
print(done)
"""


def test_ping_answers_within_2s_while_workers_compute(server, reference, tmp_path):
    """Every worker busy with ~5 MB requests (sent by other processes, so that this one only
    pings); /ping must still answer within SageMaker's 2 s."""
    _, lines, _ = reference
    body = tmp_path / "body.csv"
    body.write_text(csv_body(lines) * (5 * 1024 * 1024 // len(csv_body(lines).encode())))
    host, port = server.url.removeprefix("http://").split(":")
    clients = [subprocess.Popen([sys.executable, "-c", LOAD_CLIENT, host, port, str(body), "6"],
                                stdout=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        time.sleep(1.0)
        pings = []
        while all(client.poll() is None for client in clients) and len(pings) < 20:
            started = time.perf_counter()
            assert requests.get(server.url + "/ping", timeout=5).status_code == 200
            pings.append(time.perf_counter() - started)
            time.sleep(0.2)
        done = [int(client.communicate(timeout=120)[0]) for client in clients]
    finally:
        for client in clients:
            client.kill() if client.poll() is None else None
    assert sum(done) >= 4 and all(code == 0 for code in (c.returncode for c in clients))
    assert len(pings) >= 5 and max(pings) < 2.0, pings
    print(f"/ping under load: {len(pings)} pings, slowest {max(pings) * 1000:.0f} ms, {sum(done)} big requests")


def test_recordio_protobuf_written_by_the_sdk(server):
    """Bodies the SageMaker SDK 2.x wrote (tests/serve/fixtures/recordio) get the predictions of
    the same rows sent as CSV; a sparse row's absent columns are missing values."""
    from tests.serve.test_recordio import EXPECTED, FIXTURES

    for name in ("dense_float32", "dense_float64", "sparse_float32"):
        rows = EXPECTED[name]
        as_csv = "\n".join(",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in rows)
        got = numbers(server.invoke((FIXTURES / f"{name}.rec").read_bytes(),
                                    content_type="application/x-recordio-protobuf"))
        assert np.array_equal(got, numbers(server.invoke(as_csv))), name


def test_the_front_end_asked_for_serves(server, request):
    mode = request.node.callspec.params["server"]
    frontend = FRONTEND_MODES[mode]["SERVE_FRONTEND"]
    named = {"granian": "granian (WSGI), ", "granian-rsgi": "granian (RSGI), "}.get(mode, f"{frontend}, ")
    assert named in server.log()   # the plan's description names its front end (and interface)
    assert requests.get(server.url + "/ping", timeout=2).headers.get("Server", "").lower().startswith(frontend)


def _thread_policies(pids: list[int]) -> dict[int, str]:
    """Every thread of the processes ``pids``: its Linux scheduling policy."""
    policies = {}
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                policies[int(tid)] = current_policy(int(tid))
            except ProcessLookupError:   # a thread that ended meanwhile
                pass
    return policies


def test_granian_runs_every_thread_under_sched_batch(server, request, reference):
    """granian's master, its workers and every thread they start (I/O, Python, watchdog) run under
    SCHED_BATCH (serve.scheduling), and each worker's start line says so; gunicorn's stay SCHED_OTHER."""
    mode = request.node.callspec.params["server"]
    _, lines, expected = reference
    # requests from many connections at once, so that granian starts its Python threads
    check_concurrent_clients(server, lines, lambda picked: expected[picked], clients=8, requests_each=5)
    workers = settled_worker_pids(server)
    policies = _thread_policies([server.process.pid, *workers])
    if mode == "gunicorn":   # a gevent worker: its hub's thread (and its pool's, once a large body came)
        assert len(policies) >= 1 + len(workers) and set(policies.values()) == {"SCHED_OTHER"}, policies
        return
    assert len(policies) > 2 * len(workers) and set(policies.values()) == {"SCHED_BATCH"}, policies
    assert len(re.findall(r"worker \d+ started \(.*, SCHED_BATCH\)", server.log())) == len(workers)


def test_serve_sched_policy_normal_keeps_granian_under_sched_other(bare_model_dir, tmp_path, reference):
    _, lines, expected = reference
    with running_server(bare_model_dir("rtb-small"), tmp_path / "server.log", SERVE_FRONTEND="granian",
                        SERVE_SCHED_POLICY="normal") as srv:
        check_concurrent_clients(srv, lines, lambda picked: expected[picked], clients=8, requests_each=5)
        policies = _thread_policies([srv.process.pid, *settled_worker_pids(srv)])
        assert set(policies.values()) == {"SCHED_OTHER"}, policies
        assert "SCHED_OTHER): " in srv.log()


def test_keep_alive_serves_many_requests_on_one_connection(server, reference):
    _, lines, expected = reference
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        sockets = set()
        for i in range(20):
            connection.request("POST", "/invocations", lines[i], {"Content-Type": "text/csv"})
            response = connection.getresponse()
            assert response.status == 200 and np.float32(response.read().decode()) == expected[i]
            sockets.add(id(connection.sock))
        assert len(sockets) == 1 and connection.sock is not None   # never closed and reopened
    finally:
        connection.close()


def test_413_comes_before_the_body_is_sent(server):
    """A request declaring 100 MB gets its 413 at once, with no byte of the body sent."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                     b"Content-Length: 104857600\r\n\r\n")
        started, answer = time.perf_counter(), b""
        while b"}" not in answer and time.perf_counter() - started < 5:   # headers and the JSON error
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        assert time.perf_counter() - started < 5
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"over the limit" in answer


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_idle_keep_alive_connections_close_after_serve_keepalive(bare_model_dir, tmp_path, frontend):
    """SERVE_KEEPALIVE is the idle timeout on both front ends (granian: hyper's header read
    timeout, which also bounds a client slow to send its headers)."""
    with running_server(bare_model_dir("rtb-small"), tmp_path / "server.log", SERVE_FRONTEND=frontend,
                        SERVE_KEEPALIVE="2") as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            request = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
            sock.sendall(request)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            time.sleep(0.5)
            sock.sendall(request)   # well within the timeout: the same connection answers
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            started = time.perf_counter()
            assert sock.recv(4096) == b""   # then idle: the server closes it
            assert 1.5 < time.perf_counter() - started < 8


ROW = b"2,0,0.0,7.0,3.0,20.0,2"


def _post(body_length: int, sent: bytes, chunked: bool = False) -> bytes:
    """A CSV request's head for a body of ``body_length`` bytes (or chunked) and what is sent of its body."""
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % body_length
    if chunked:
        sent = b"%x\r\n%s\r\n" % (len(sent), sent)
    return b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n" + framing + b"\r\n\r\n" + sent


# The ways a client can leave a body unfinished: (name, first write, a later write after an answer, trickles).
SLOW_SHAPES = {
    "stalled": (_post(1000, b"1,2,3"), None, False),
    "chunked": (_post(0, b"1,2,3", chunked=True), None, False),
    "trickled": (_post(1000, b"1"), None, True),
    # a whole request, and the start of the next one in the same write (pipelined)
    "pipelined": (_post(len(ROW), ROW) + _post(1000, b"1,2"), None, False),
    # a whole request, its answer, then the start of the next one on the same keep-alive connection
    "after an answer": (_post(len(ROW), ROW), _post(1000, b"1,2"), False),
}


def _slow_client(host: str, port: int, shape: str) -> tuple[bytes, float]:
    """What the server sends on a connection of this shape until it closes it (a trickling client
    keeps sending a byte every 0.2 s meanwhile), and when it closed, in seconds from the start."""
    first, later, trickle = SLOW_SHAPES[shape]
    started, answer = time.perf_counter(), b""
    with socket.create_connection((host, port), timeout=15) as sock:
        sock.sendall(first)
        if later:
            answer = sock.recv(4096)
            sock.sendall(later)
        sock.settimeout(0.2 if trickle else 15)
        while time.perf_counter() - started < 15:
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                try:
                    sock.sendall(b"1")
                except OSError:   # the server closed its side
                    break
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
    return answer, time.perf_counter() - started


@pytest.mark.parametrize("mode", list(FRONTEND_MODES))
def test_a_slow_body_is_cut_off_at_the_timeout_while_others_are_served(bare_model_dir, tmp_path, reference, mode):
    """Clients that send headers and then stall their body (one of them chunked), trickle it a
    byte at a time, or stall a request that came pipelined or after an answer on a keep-alive
    connection: each gets a JSON 408 (or its connection closed) at SAGEMAKER_MODEL_SERVER_TIMEOUT,
    and meanwhile normal requests are answered at once. On gunicorn and on granian's RSGI
    interface a slow client holds only its connection: more of them than the worker has threads.
    On granian's WSGI interface (the default) each holds one of the worker's threads until it is
    cut off: as many as leave two free."""
    _, lines, expected = reference
    timeout_s = 3
    with running_server(bare_model_dir("rtb-small"), tmp_path / "server.log", SAGEMAKER_MODEL_SERVER_WORKERS="1",
                        SAGEMAKER_MODEL_SERVER_TIMEOUT=str(timeout_s), **FRONTEND_MODES[mode]) as server:
        host, port = server.url.removeprefix("http://").split(":")
        threads = int(re.search(r"x (\d+) threads", server.log()).group(1)) if mode == "granian" else 8
        shapes = list(SLOW_SHAPES) + ["stalled"] * (threads - 2 - len(SLOW_SHAPES) if mode == "granian" else 6)
        started = time.perf_counter()
        with ThreadPoolExecutor(len(shapes)) as pool:   # every client waits (and trickles) from the start
            outcomes = [pool.submit(_slow_client, host, int(port), shape) for shape in shapes]
            time.sleep(0.5)
            for i in range(10):   # the slow clients hold nothing a normal request needs
                response = requests.post(server.url + "/invocations", data=lines[i],
                                         headers={"Content-Type": "text/csv"}, timeout=2)
                assert response.status_code == 200 and np.float32(response.text) == expected[i]
            assert time.perf_counter() - started < timeout_s - 1
            for shape, outcome in zip(shapes, outcomes):
                answer, closed_after = outcome.result()
                assert timeout_s - 0.5 < closed_after < timeout_s + 5, (shape, closed_after)   # at the timeout
                last = answer.rpartition(b"HTTP/1.1 ")[2]   # the answer to the unfinished request
                if answer.count(b"HTTP/1.1 ") > (shape in ("pipelined", "after an answer")):
                    assert last.startswith(b"408"), (shape, answer)
                    message = json.loads(last.split(b"\r\n\r\n", 1)[1])["error"]
                    assert message.startswith("the request body did not arrive"), message
        response = requests.post(server.url + "/invocations", data=lines[0], headers={"Content-Type": "text/csv"},
                                 timeout=2)
        assert response.status_code == 200 and np.float32(response.text) == expected[0]


def test_stalled_bodies_in_every_thread_are_shed_long_before_the_timeout(bare_model_dir, tmp_path, reference):
    """granian's WSGI interface: stalled bodies in all of a worker's threads would leave every other
    request to it, /ping included, waiting for SAGEMAKER_MODEL_SERVER_TIMEOUT (30 s here). The
    watchdog sheds them after serve.body_deadline.STALL_S of silence instead: each gets a JSON 408,
    and a whole request that came meanwhile, waiting for a thread, is answered, not cut with them."""
    _, lines, expected = reference
    with running_server(bare_model_dir("rtb-small"), tmp_path / "server.log", SAGEMAKER_MODEL_SERVER_WORKERS="1",
                        SAGEMAKER_MODEL_SERVER_TIMEOUT="30", SERVE_THREADS="2", **FRONTEND_MODES["granian"]) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with ThreadPoolExecutor(2) as pool:
            outcomes = [pool.submit(_slow_client, host, int(port), "stalled") for _ in range(2)]
            time.sleep(0.3)   # both threads now wait for a body
            started = time.perf_counter()
            response = requests.post(server.url + "/invocations", data=lines[0],
                                     headers={"Content-Type": "text/csv"}, timeout=10)
            assert response.status_code == 200 and np.float32(response.text) == expected[0]
            assert time.perf_counter() - started < 5
            for outcome in outcomes:
                answer, closed_after = outcome.result()
                assert closed_after < 5, answer
                assert answer.startswith(b"HTTP/1.1 408"), answer
                message = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
                assert message.startswith("the request body stalled for 1 s"), message


def test_a_stalled_body_that_waited_for_a_thread_is_shed_with_408(bare_model_dir, tmp_path):
    """A stalled body whose request waited for a thread has been silent since before its read
    began: shed soon after a thread takes it, it is answered 408 like the one shed before it,
    not 400 as a body its client cut short (one thread, so the second request waits for it)."""
    with running_server(bare_model_dir("rtb-small"), tmp_path / "server.log", SAGEMAKER_MODEL_SERVER_WORKERS="1",
                        SAGEMAKER_MODEL_SERVER_TIMEOUT="30", SERVE_THREADS="1", **FRONTEND_MODES["granian"]) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(_slow_client, host, int(port), "stalled")
            time.sleep(0.3)   # the one thread now waits for its body; the next request waits for the thread
            second = pool.submit(_slow_client, host, int(port), "stalled")
            for outcome in (first, second):
                answer, closed_after = outcome.result()
                assert closed_after < 5, answer
                assert answer.startswith(b"HTTP/1.1 408"), answer
                message = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
                assert message.startswith("the request body stalled for 1 s"), message


def test_a_refusal_that_leaves_the_body_unread_keeps_the_next_request_on_the_connection(server, reference):
    """A 415, 406 or 404 answered without reading the request's body: either the connection
    stays usable or the answer says ``Connection: close`` (http.client then reconnects); a
    connection closed unannounced would lose the next request (RemoteDisconnected)."""
    _, lines, expected = reference
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    refusals = [("POST", "/invocations", {"Content-Type": "text/plain"}, 415),
                ("POST", "/invocations", {"Content-Type": "text/csv", "Accept": "image/png"}, 406),
                ("POST", "/nowhere", {"Content-Type": "text/csv"}, 404)]
    try:
        for method, path, headers, status in refusals:
            connection.request(method, path, "1," * 50_000, headers)   # a body large enough to stay unread
            response = connection.getresponse()
            assert response.status == status and "error" in json.loads(response.read())
            connection.request("POST", "/invocations", lines[0], {"Content-Type": "text/csv"})
            response = connection.getresponse()
            assert response.status == 200 and np.float32(response.read().decode()) == expected[0]
    finally:
        connection.close()
