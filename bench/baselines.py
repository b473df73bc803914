"""Baseline servers for the side-by-side benchmark, run under gunicorn like ``serve``.

(c) :func:`stock_app`: a stock-container equivalent. Per request it does what the stock
    SageMaker XGBoost container (aws/sagemaker-xgboost-container, ``algorithm_mode/serve.py``
    with ``serve_utils.parse_content_data`` and ``encoder.csv_to_dmatrix``) does on the CSV
    path: a Flask view reads the body; 204 when empty; the content type is parsed; the
    body is decoded and stripped; ``csv.Sniffer`` guesses the delimiter from the first
    line; each line is split in Python with empty fields turned into "nan"; a numpy array
    of strings is cast to float64; a ``DMatrix`` is built; ``Booster.predict`` runs with
    ``validate_features=False`` on a booster set to ``nthread=1``; the Accept header is
    checked; the predictions are written as CSV through ``np.savetxt``. It is served the
    way the stock container serves it: gevent workers, one per CPU, keep-alive 60 s,
    ``OMP_NUM_THREADS=1``, the model loaded in each worker. Differences, all in the stock
    container's favour: no nginx in front, no per-request INFO log line, no attempt to
    unpickle the model file first (unpickling a user's file is unsafe; the sample models
    are UBJSON, which the stock container also ends up loading with ``load_model``).

(d) ``hello_app``: a hello-world app that reads the body and answers a constant: the
    floor of Python serving under the same front end and configuration (WSGI on gunicorn and
    on granian by default, RSGI on granian's RSGI interface, as ``serve``; ``hello_wsgi_app`` is
    the WSGI one alone).
    :func:`flask_hello_app` is the same in Flask, to show what the framework costs.

The model folder comes from ``BENCH_MODEL_DIR`` (a folder holding ``xgboost-model``, as
SageMaker extracts a training job's ``model.tar.gz``). Serve them with, e.g.::

    BENCH_MODEL_DIR=/path/to/model gunicorn -k gevent -w 2 'bench.baselines:stock_app()'
    gunicorn -k gevent -w 2 bench.baselines:hello_app
"""
from __future__ import annotations

import csv
import http.client
import io
import os
from email.message import Message
from pathlib import Path

STOCK_MODEL_FILE = "xgboost-model"
STOCK_ACCEPTS = ("application/json", "application/jsonlines", "application/x-recordio-protobuf", "text/csv")
MAX_CONTENT_LENGTH = 6 * 1024 * 1024


def _media_type(header: str | None) -> str:
    """The media type of a Content-Type/Accept header without parameters, lower case."""
    message = Message()
    message["content-type"] = header or ""
    return message.get_content_type() if header else ""


def load_stock_booster(model_dir: Path):
    """The XGBoost booster of a stock model folder, set to one thread as the stock container sets it."""
    import xgboost as xgb

    model_dir = Path(model_dir)
    path = model_dir / STOCK_MODEL_FILE
    if not path.exists():
        files = sorted(p.name for p in model_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"no model file in {model_dir}")
        path = model_dir / files[0]          # the stock container takes the first file it lists
    booster = xgb.Booster()
    booster.load_model(bytearray(path.read_bytes()))   # the file has no suffix: let XGBoost sniff the format
    booster.set_param("nthread", 1)
    return booster


def stock_csv_to_dmatrix(text: str):
    """A DMatrix from CSV text, parsed the way the stock container's encoder parses it."""
    import numpy as np
    import xgboost as xgb

    sniffed = csv.Sniffer().sniff(text.split("\n")[0][:512]).delimiter
    delimiter = "," if sniffed.isalnum() else sniffed
    rows = [["nan" if field == "" else field for field in line.split(delimiter)] for line in text.split("\n")]
    return xgb.DMatrix(np.array(rows).astype(float))


def _csv_response(predictions) -> str:
    import numpy as np

    stream = io.StringIO()
    np.savetxt(stream, predictions, delimiter=",", fmt="%s")
    return stream.getvalue()


def stock_app(model_dir: str | None = None):
    """The Flask app of the stock-container equivalent; loads the model once per worker."""
    import flask

    booster = load_stock_booster(Path(model_dir or os.environ["BENCH_MODEL_DIR"]))
    app = flask.Flask("stock_equivalent")
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH

    @app.route("/ping", methods=["GET"])
    def ping():
        return flask.Response(status=http.client.OK)

    @app.route("/invocations", methods=["POST"])
    def invocations():
        payload = flask.request.data
        if len(payload) == 0:
            return flask.Response(response="", status=http.client.NO_CONTENT)
        content_type = _media_type(flask.request.content_type)
        try:
            if content_type != "text/csv":
                raise ValueError(f"Content-type {flask.request.content_type} is not supported.")
            dtest = stock_csv_to_dmatrix(payload.strip().decode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - the stock container maps every parse failure to 415
            return flask.Response(response=f"Loading csv data failed: {exc}", status=http.client.UNSUPPORTED_MEDIA_TYPE)
        try:
            predictions = booster.predict(dtest, validate_features=False)
        except Exception as exc:  # noqa: BLE001 - and every predict failure to 400
            return flask.Response(response=f"Unable to evaluate payload provided: {exc}",
                                  status=http.client.BAD_REQUEST)
        accept = _media_type(flask.request.headers.get("Accept"))
        if not accept or accept == "*/*":
            accept = os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "text/csv")
        if accept not in STOCK_ACCEPTS:
            return flask.Response(response=f"Accept type {accept} is not supported.",
                                  status=http.client.NOT_ACCEPTABLE)
        values = predictions.tolist()
        if accept == "application/json":
            import json
            body = json.dumps({"predictions": [{"score": v} for v in values]})
        else:
            body = _csv_response(values)
        return flask.Response(response=body, status=http.client.OK, mimetype=accept)

    return app


def hello_wsgi_app(environ, start_response):
    """Hello-world WSGI app: reads the request body, answers ``0.5`` (and 200 to /ping)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "text/csv"), ("Content-Length", "4")])
    return [b"0.5\n"]


class _HelloApp:
    """:func:`hello_wsgi_app` for gunicorn and granian's WSGI interface, and the same for granian's
    RSGI interface when the plan names it (``serve.rsgi``): await the body, answer ``0.5``. Each
    front end's floor is thus measured on the interface ``serve`` uses there."""

    _headers = [("content-type", "text/csv")]

    def __call__(self, environ, start_response):
        return hello_wsgi_app(environ, start_response)

    async def __rsgi__(self, scope, proto):
        if scope.proto == "http":
            await proto()
            proto.response_bytes(200, self._headers, b"0.5\n")


hello_app = _HelloApp()


class _HelloUnreadApp(_HelloApp):
    """:class:`_HelloApp` on RSGI without awaiting the body (granian drains it after the answer):
    beside the RSGI hello world, what granian's body read costs per request (the future it hands
    Python, resolved on its Rust threads and resumed on the event loop)."""

    async def __rsgi__(self, scope, proto):
        if scope.proto == "http":
            proto.response_bytes(200, self._headers, b"0.5\n")


hello_unread_app = _HelloUnreadApp()


def flask_hello_app():
    """Hello world in Flask: what the framework adds to :func:`hello_app`."""
    import flask

    app = flask.Flask("hello")

    @app.route("/ping", methods=["GET"])
    def ping():
        return flask.Response(status=200)

    @app.route("/invocations", methods=["POST"])
    def invocations():
        flask.request.get_data()
        return flask.Response(response="0.5\n", status=200, mimetype="text/csv")

    return app
