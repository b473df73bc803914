"""deploy.client.BidFilter, the ad server's side, against the real locally hosted
endpoint: answers as the server gives them, micro-batching that hands each
caller its own answer, and fail-open on timeout, throttling and model errors."""
from __future__ import annotations

import http.server
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from deploy.client import BidFilter, decode_scores, encode_row, make_runtime_client
from tests.deploy.conftest import REGION
from tests.deploy.test_loadtest import endpoint  # noqa: F401  (the fixture)

ROWS = [[2, 0, 0.0, 7.0, 3.0, 20.0, 2], [1, 1, 0.5, 3.0, 1.0, 10.0, 0], [0, 2, None, 1.0, 9.0, 5.0, 1]]


def _client(aws):
    return make_runtime_client(pool=8, timeout_ms=5000, session=boto3.session.Session(region_name=REGION))


def test_rows_are_encoded_as_the_server_reads_them():
    assert encode_row([1, 2.5, None, float("nan")]) == b"1.0,2.5,nan,nan"
    assert decode_scores(b"0.25,0.5", 2) == [0.25, 0.5]                 # the server's batch of scores
    assert decode_scores(b"0.25,1\n0.5,0\n", 2) == [0.25, 0.5]          # selected outputs: one line a row
    with pytest.raises(ValueError, match="1 answers for 2 rows"):
        decode_scores(b"0.25", 2)


def test_scores_come_from_the_endpoint_and_batching_hands_each_caller_its_own(aws, endpoint):  # noqa: F811
    single = BidFilter(endpoint, client=_client(aws), timeout_ms=5000, threshold=0.2)
    expected = [single.score(r) for r in ROWS]
    assert all(0.0 < s < 1.0 for s in expected) and len(set(expected)) == 3
    assert single.should_bid(ROWS[0]) == (expected[0] >= 0.2)
    assert single.stats.requests == 4 and single.stats.failed_open == 0

    calls_before = aws.calls().count("InvokeEndpoint")
    with BidFilter(endpoint, client=_client(aws), timeout_ms=5000, batch_max_rows=16,
                   batch_max_wait_ms=20) as batched:
        rows = ROWS * 10
        with ThreadPoolExecutor(max_workers=30) as pool:
            answers = list(pool.map(batched.score, rows))
    assert answers == pytest.approx(expected * 10, abs=1e-6)
    assert batched.stats.rows == 30 and batched.stats.failed_open == 0
    assert batched.stats.requests < 30                              # rows shared requests
    assert aws.calls().count("InvokeEndpoint") - calls_before == batched.stats.requests


def test_throttling_and_model_errors_fail_open(aws, endpoint):  # noqa: F811
    bid_filter = BidFilter(endpoint, client=_client(aws), timeout_ms=5000, threshold=0.99)
    aws.control("/_local/faults", {"operation": "InvokeEndpoint", "code": "ThrottlingException", "times": 1})
    assert bid_filter.should_bid(ROWS[0]) is True                    # no answer: bid
    assert bid_filter.should_bid(ROWS[0]) is False                   # the model's low score
    assert bid_filter.should_bid([1, 2, 3]) is True                  # the container refused the row
    assert bid_filter.stats.errors == {"ThrottlingException": 1, "ModelError": 1}
    assert bid_filter.stats.failed_open == 2


class _Slow(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        time.sleep(3)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"0.5")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("batch_rows", [1, 4])
def test_a_late_answer_fails_open_within_the_timeout(aws, deployed, batch_rows):
    deployed()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        aws.control("/_local/containers", {"endpoint": "bid-filter", "url": f"http://127.0.0.1:{server.server_port}"})
        bid_filter = BidFilter("bid-filter", timeout_ms=200, batch_max_rows=batch_rows,
                               client=make_runtime_client(timeout_ms=200,
                                                          session=boto3.session.Session(region_name=REGION)))
        began = time.perf_counter()
        assert bid_filter.should_bid(ROWS[0]) is True
        waited = time.perf_counter() - began
        assert waited < 2.5                               # it did not wait for the 3 s answer
        assert bid_filter.stats.errors == {"Timeout": 1}
        bid_filter.close()
    finally:
        server.shutdown()
