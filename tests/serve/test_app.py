"""serve.app.ServeApp in process: the one-score fast path writes exactly what the codecs write."""
import io

import numpy as np
import pytest

from serve import codecs
from serve.app import create_app
from serve.loading import load_model
from serve.settings import Settings


@pytest.fixture(scope="module")
def loaded(bare_model_dir):
    return load_model(bare_model_dir("rtb-small"))


def call(app, body: bytes, content_type="text/csv", accept=None):
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/invocations", "CONTENT_TYPE": content_type,
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    if accept:
        environ["HTTP_ACCEPT"] = accept
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = status, dict(headers)

    answer["body"] = b"".join(app(environ, start_response))
    return answer


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("accept", list(codecs.ENCODERS))
def test_one_score_is_encoded_as_the_codec_encodes_it(loaded, accept, batch):
    app = create_app(loaded, Settings(batch=batch))
    encode = codecs.ENCODERS[accept]
    values = np.array([0.5, 1e-8, 0.1, 1 / 3, 0.999999, 3.4e38, -0.0, 0.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    values = np.concatenate([values, np.random.default_rng(0).random(200, dtype=np.float32)])
    for value in values:
        predictions = np.array([value], dtype=np.float32)
        expected = encode(app.select_outputs(predictions), selected=False, batch=batch)
        assert app.encoders[accept](predictions) == expected, (accept, value)
    several = values[:5]
    assert app.encoders[accept](several) == encode(app.select_outputs(several), selected=False, batch=batch)


def test_a_request_through_the_wsgi_call(loaded):
    app = create_app(loaded, Settings())
    line = b"0.1,3,1,0.5,2,7,0.3"
    expected = loaded.predictor.predict(codecs.decode_csv(line, 7))
    answer = call(app, line)
    assert answer["status"] == "200 OK" and answer["headers"]["Content-Type"] == "text/csv"
    assert answer["body"] == str(expected[0]).encode()
    assert int(answer["headers"]["Content-Length"]) == len(answer["body"])
    as_json = call(app, b"[[0.1,3,1,0.5,2,7,0.3]]", "application/json", "application/json")
    assert as_json["body"] == ('{"predictions":[{"score":' + str(expected[0]) + "}]}").encode()
    refused = call(app, b"1,2", accept="text/html")
    assert refused["status"].startswith("406") and refused["headers"]["Content-Type"] == "application/json"
    selected = create_app(loaded, Settings(outputs=("predicted_label", "probability")))
    assert call(selected, line)["body"] == f"{int(expected[0] > 0.5)},{str(expected[0])}".encode()


def test_large_bodies_decoded_in_pieces_equal_one_decode(sample_model_dir):
    from serve.app import OFFLOAD_BYTES, PIECE_BYTES, _decode_in_pieces

    lines = (sample_model_dir("rtb-large") / "sample.csv").read_text().splitlines()
    body = ("\n".join(lines * (OFFLOAD_BYTES // len("\n".join(lines)) + 2)) + "\n").encode()
    assert len(body) > 4 * PIECE_BYTES
    whole = codecs.decode_csv(body, 60)
    pieces = _decode_in_pieces(body, codecs.decode_csv, 60)
    assert pieces.flags.c_contiguous and pieces.dtype == np.float32
    assert np.array_equal(pieces, whole, equal_nan=True)
    # A bad value deep in the body is named by its row in the whole body, not in its piece.
    broken = body.split(b"\n")
    bad_row = len(broken) * 3 // 4
    broken[bad_row - 1] = broken[bad_row - 1].replace(b",", b",x", 1)
    with pytest.raises(codecs.RequestError, match=f"row {bad_row}, column 2"):
        _decode_in_pieces(b"\n".join(broken), codecs.decode_csv, 60)


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("accept", list(codecs.ENCODERS))
def test_large_responses_encoded_in_blocks_equal_one_encode(loaded, accept, batch):
    from serve.app import BLOCK_ROWS

    app = create_app(loaded, Settings(batch=batch))
    scores = np.random.default_rng(1).random(3 * BLOCK_ROWS + 17, dtype=np.float32)
    scores[[5, BLOCK_ROWS, 2 * BLOCK_ROWS + 1]] = np.nan
    expected = codecs.ENCODERS[accept](app.select_outputs(scores), selected=False, batch=batch)
    assert app._encode_in_blocks(scores, accept) == expected


def test_threaded_workers_decode_at_most_large_at_once_large_requests(loaded):
    """Six threads each POST a large body to one app (granian's WSGI threads, gthread): at most
    LARGE_AT_ONCE predict at a time (each 6 MB body expands to ~78 MB while decoding), and every
    one gets its predictions."""
    import threading
    import time

    from serve.app import LARGE_AT_ONCE, OFFLOAD_BYTES

    app = create_app(loaded, Settings())
    real_predict, running, most = app.predictor.predict, [0], [0]
    lock = threading.Lock()

    def counting_predict(rows):   # the real prediction, with a count of those in progress around it
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.05)   # long enough for the other threads to arrive
            return real_predict(rows)
        finally:
            with lock:
                running[0] -= 1

    app.predictor.predict = counting_predict
    row = b"1,2,3,4,5,6,7\n"
    body = row * (OFFLOAD_BYTES // len(row) + 1)
    answers = [None] * 6

    def post(i):
        answers[i] = call(app, body)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert most[0] == LARGE_AT_ONCE
    # one score per row (the stock container's CSV: one line, comma-separated)
    assert all(a["status"].startswith("200") and len(a["body"].split(b",")) == body.count(b"\n") for a in answers)
