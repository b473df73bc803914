"""The WSGI application: SageMaker's routes, nothing else.

``POST /invocations`` is the hot path and a plain WSGI handler
(:class:`ServeApp`): Flask's request and response objects cost more per
request than parsing, predicting and encoding a one-row request together, so
they stay off it. Its steps, in order: pick the decoder (415) and the response
type (406) from the headers, read the body (413 over the limit, 400 when
empty), decode it to float32 rows (400 naming the row and column), check the
row width, predict, select the outputs, encode.

Flask serves everything else: ``GET /ping`` (the model is loaded and
self-tested before the app exists, so it is always healthy), ``GET
/execution-parameters`` and the JSON 404/405 of unknown routes.

Every refusal is a short JSON ``{"error": ...}`` with its 4xx status; an
unexpected failure is logged with its traceback and answered 500 with no
detail, and the worker lives on.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from http import HTTPStatus

import numpy as np
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from serve import codecs
from serve.codecs import RequestError
from serve.loading import LoadedModel
from serve.outputs import OutputSelector
from serve.settings import Settings

log = logging.getLogger(__name__)
JSON_TYPE = "application/json"
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
_OK = _STATUS_LINES[200]
_FLOAT32 = np.dtype(np.float32)
_NOT_FINITE = ("nan", "inf", "-inf")
# One default score as each codec writes it: (text before, text after).
_ONE_SCORE = {codecs.CSV: ("", ""), codecs.JSON: ('{"predictions":[{"score":', "}]}"),
              codecs.JSONLINES: ('{"score":', "}\n")}


# Under gevent, bodies from this size on are decoded and predicted in a native thread (gevent's
# pool), off the event loop: the worker keeps answering /ping, whose SageMaker timeout is 2 s,
# while a 6 MB request computes. Smaller bodies take microseconds: a thread hop would cost more.
OFFLOAD_BYTES = 256 * 1024
# At most this many large requests decode at once in one worker (under gevent its own pool, not
# gevent's hub pool of 10; with threads, as granian's WSGI interface, a semaphore): each 6 MB body
# expands to up to ~78 MB while decoding, and under the GIL more threads add memory, not speed.
# The others wait with their body read (6 MB each), their threads blocked, not holding the GIL.
LARGE_AT_ONCE = 2


# A numpy call on a large body holds the GIL throughout (decoding 5 MB of CSV about 0.3 s,
# writing its 300,000 scores about 0.4 s): another thread of the worker (the one answering
# /ping under granian, gevent's hub under gunicorn) waits that long. Large bodies are
# therefore decoded in pieces of about PIECE_BYTES and their scores written BLOCK_ROWS at
# a time: between two numpy calls the interpreter hands the GIL on (sys.getswitchinterval).
PIECE_BYTES = 64 * 1024
BLOCK_ROWS = 8192
# How the default scores' blocks of each format join: (separator, body prefix, body suffix).
_BLOCK_JOINS = {codecs.CSV: (b",", b"", b""), codecs.JSON: (b",", b'{"predictions":[', b"]}"),
                codecs.JSONLINES: (b"", b"", b"")}


class _BodyTimeout(Exception):
    """The body did not arrive within the request timeout (gevent workers)."""


def _decode_in_pieces(body: bytes, decode, num_feature: int):
    """A large CSV body decoded a few lines at a time (see PIECE_BYTES); the whole body at once
    for other formats, for a body with blank lines, and whenever a piece is refused (so that
    an error names the row of the whole body)."""
    if decode is not codecs.decode_csv or b"\n\n" in body or b"\n\r\n" in body:
        return decode(body, num_feature)
    pieces, start, size = [], 0, len(body)
    while start < size:
        end = body.find(b"\n", min(start + PIECE_BYTES, size))
        end = size if end < 0 else end + 1
        piece = body[start:end]
        if piece.strip():
            try:
                pieces.append(decode(piece, num_feature))
            except RequestError:
                return decode(body, num_feature)
        start = end
    try:
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    except (ValueError, IndexError):   # rows of different widths (or none): the whole body says which
        return decode(body, num_feature)


class ServeApp:
    """WSGI callable: ``POST /invocations`` handled here, every other request by ``flask_app``.
    ``offload_large``: run large requests in gevent's thread pool (set for gevent workers)."""

    def __init__(self, loaded: LoadedModel, settings: Settings, flask_app: Flask, *, offload_large: bool = False):
        self.flask_app = flask_app
        self.offload_large = offload_large
        self._large_pool = None
        self.loaded = loaded
        self.predictor = loaded.predictor
        self.num_feature = loaded.num_feature
        self.select_outputs = OutputSelector(settings.outputs, loaded.objective, loaded.num_class,
                                             settings.threshold)
        self.selected = self.select_outputs.selected
        self.batch = settings.batch
        self.default_accept = settings.default_accept
        self.max_payload_bytes = settings.max_payload_bytes
        self.body_timeout_s = float(settings.timeout)   # SAGEMAKER_MODEL_SERVER_TIMEOUT
        self._deadline = None   # gevent workers: gevent.Timeout, a deadline on the whole body
        if offload_large:
            from gevent import Timeout

            self._deadline = Timeout
        self._large_slots = threading.BoundedSemaphore(LARGE_AT_ONCE)   # threaded workers: see LARGE_AT_ONCE
        self.body_deadline = None   # granian's WSGI interface: serve.body_deadline.BodyDeadline
        self.libsvm_index_base = settings.libsvm_index_base
        # Per response type, chosen once: the encoder (predictions -> body) and the Content-Type header.
        self.encoders = {accept: self._encoder(accept) for accept in codecs.ENCODERS}
        self.type_headers = {accept: ("Content-Type", accept) for accept in (*codecs.ENCODERS, JSON_TYPE)}

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] != "/invocations":
            if _closes_after_unread_body(environ):
                return self.flask_app(environ, _saying_close(start_response))
            return self.flask_app(environ, start_response)
        try:
            if environ["REQUEST_METHOD"] != "POST":
                raise RequestError(405, "/invocations takes POST")
            body, content_type = self.invoke(environ)
            start_response(_OK, [self.type_headers[content_type], ("Content-Length", str(len(body)))])
            return [body]
        except RequestError as error:
            status, body, content_type = error.status, _error_body(error.message), JSON_TYPE
        except Exception:   # a bug or a native failure: log it, answer 500, keep the worker
            log.exception("internal error on POST /invocations")
            status, body, content_type = 500, _error_body("internal error; the server log has the details"), JSON_TYPE
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if status == 408 or ("serve.body_read" not in environ and _closes_after_unread_body(environ)):
            # the rest of a slow body may still come, or granian (WSGI) closes the connection after
            # an answer that left the body unread: say so, or the client's next request on it is lost
            headers.append(("Connection", "close"))
        if status == 405:
            headers.append(("Allow", "POST"))
        start_response(_STATUS_LINES[status], headers)
        return [body]

    def invoke(self, environ) -> tuple[bytes, str]:
        """One inference: the request's environ -> (response body, its content type)."""
        decode, accept = self.choose_codecs(environ.get("CONTENT_TYPE"), environ.get("HTTP_ACCEPT"))
        body = self.read_body(environ)
        environ["serve.body_read"] = True
        if len(body) >= OFFLOAD_BYTES:
            if self.offload_large:
                return self.large_pool().apply(self.infer, (body, decode, accept)), accept
            with self._large_slots:
                return self.infer(body, decode, accept), accept
        return self.infer(body, decode, accept), accept

    def choose_codecs(self, content_type: str | None, accept_header: str | None):
        """(decoder, response type) from the request's headers; 415 or 406 when none fits."""
        return (codecs.decoder_for(content_type, self.libsvm_index_base),
                codecs.response_type(accept_header, self.default_accept))

    def large_pool(self):
        """This worker's pool for large requests, made on first use (after the fork)."""
        if self._large_pool is None:
            from gevent.threadpool import ThreadPool

            self._large_pool = ThreadPool(LARGE_AT_ONCE)
        return self._large_pool

    def infer(self, body: bytes, decode, accept: str) -> bytes:
        """Decode, check the width, predict, select the outputs, encode."""
        large = len(body) >= OFFLOAD_BYTES
        rows = _decode_in_pieces(body, decode, self.num_feature) if large else decode(body, self.num_feature)
        if rows.shape[1] != self.num_feature:
            raise RequestError(400, f"each row must have {self.num_feature} values (the model's features); "
                                    f"got {rows.shape[1]}")
        predictions = self.predictor.predict(rows)
        if large and not self.selected and predictions.ndim == 1 and accept in _BLOCK_JOINS:
            return self._encode_in_blocks(predictions, accept)
        return self.encoders[accept](predictions)

    def _encode_in_blocks(self, predictions, accept: str) -> bytes:
        """The default scores of a large request encoded BLOCK_ROWS at a time (see BLOCK_ROWS):
        the same bytes as one encode, its blocks joined as the format joins rows."""
        encode = self.encoders[accept]
        blocks = [encode(predictions[i:i + BLOCK_ROWS]) for i in range(0, predictions.shape[0], BLOCK_ROWS)]
        separator, prefix, suffix = _BLOCK_JOINS[accept]
        if accept == codecs.CSV and self.batch:
            separator = b""   # in batch mode every line ends with its newline already
        if prefix or suffix:
            blocks = [block[len(prefix):len(block) - len(suffix)] for block in blocks]
        return prefix + separator.join(blocks) + suffix

    def _encoder(self, accept: str):
        """predictions -> response body for ``accept``: the selected outputs through the codec,
        except one default score (the bid filter's answer), written directly: the same text
        as the codec's (numpy's shortest float32 repr), without building the outputs dict."""
        encode, select, selected, batch = codecs.ENCODERS[accept], self.select_outputs, self.selected, self.batch

        def general(predictions):
            return encode(select(predictions), selected=selected, batch=batch)

        if selected or accept not in _ONE_SCORE:
            return general
        opening, closing = _ONE_SCORE[accept]
        opening, closing = opening.encode(), (closing + ("\n" if batch and accept == codecs.CSV else "")).encode()

        def one_score(predictions):
            if predictions.shape == (1,) and predictions.dtype == _FLOAT32:
                text = str(predictions[0])
                if text not in _NOT_FINITE:   # JSON writes those as null: the codec knows how
                    return opening + text.encode() + closing
            return general(predictions)

        return one_score

    def read_body(self, environ) -> bytes:
        """The request body, refused with 413 over the payload limit (before reading it when
        the length is declared), 400 when empty or cut short, and 408 when it does not arrive
        within the request timeout (gunicorn's workers would wait for it forever). Under granian
        the deadline is serve.rsgi's (RSGI) or serve.body_deadline's (WSGI)."""
        sock = environ.get("gunicorn.socket")
        if sock is None:
            return self._read_body(environ)
        sock.settimeout(self.body_timeout_s)   # sync and gthread: a recv that waits that long
        try:
            if self._deadline is None:
                return self._read_body(environ)
            # gevent: the whole body within the timeout, so that a client trickling it a byte at
            # a time is cut off too (a socket timeout restarts with every byte)
            with self._deadline(self.body_timeout_s, _BodyTimeout):
                return self._read_body(environ)
        except (OSError, _BodyTimeout):   # socket.timeout: a client that sends its body too slowly, or stalls
            raise RequestError(408, f"the request body did not arrive within {self.body_timeout_s:g} s") from None
        finally:
            sock.settimeout(None)   # idle keep-alive connections are gunicorn's keepalive timeout's job

    def _read_body(self, environ) -> bytes:
        length = self.declared_length(environ.get("CONTENT_LENGTH"))
        # chunked transfer: read at most one byte past the limit
        size = self.max_payload_bytes + 1 if length is None else length
        reads = self.body_deadline.reads if self.body_deadline is not None else None
        if reads is None:
            return self.checked_body(environ["wsgi.input"].read(size), length)
        # granian's WSGI interface: the watchdog ends a read past the deadline (serve.body_deadline)
        thread, started = threading.get_ident(), time.monotonic()
        reads[thread] = started
        try:
            body = environ["wsgi.input"].read(size)
        finally:
            del reads[thread]
        if length is None or len(body) < length:   # cut short: by the deadline, or shed (serve.body_deadline)
            # by a sweep that cut while this read was pending (a client that cut its own body short
            # at that moment is answered 408 too: it is gone or half-closed either way)
            deadline = self.body_deadline
            if deadline.last_shed >= started:
                raise RequestError(408, f"the request body stalled for {deadline.stall_s:g} s while "
                                        "every thread of this worker was waiting for a body")
            if deadline.last_cut >= started or time.monotonic() - started >= self.body_timeout_s:
                raise RequestError(408, f"the request body did not arrive within {self.body_timeout_s:g} s")
        return self.checked_body(body, length)

    def declared_length(self, declared: str | None) -> int | None:
        """The Content-Length header as a number (None when absent), refused with 413 over the
        payload limit: before a byte of the body is read."""
        if not declared:
            return None
        try:
            length = int(declared)
        except ValueError:
            raise RequestError(400, "Content-Length is not a number") from None
        if length > self.max_payload_bytes:
            raise RequestError(413, f"the request body ({length} bytes) is over the limit of "
                                    f"{self.max_payload_bytes} bytes")
        return length

    def checked_body(self, body: bytes, length: int | None) -> bytes:
        """The body as read: 400 when empty or shorter than its declared ``length``, 413 when
        a body of undeclared length (chunked) went past the limit."""
        if length is not None and len(body) < length:   # the client closed its side before sending all it announced
            raise RequestError(400, f"the body ended after {len(body)} of the {length} bytes "
                                    "its Content-Length announced")
        if length is None and len(body) > self.max_payload_bytes:
            raise RequestError(413, f"the request body is over the limit of {self.max_payload_bytes} bytes")
        if not body:
            raise RequestError(400, "the request body is empty")
        return body

def _closes_after_unread_body(environ) -> bool:
    """Whether the server closes this connection when the app leaves the request's body unread:
    granian does (gunicorn reads past the rest itself)."""
    return "gunicorn.socket" not in environ and (
        environ.get("CONTENT_LENGTH", "0") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ)


def _saying_close(start_response):
    """``start_response`` that adds ``Connection: close`` to the answer."""
    def start(status, headers, exc_info=None):
        return start_response(status, [*headers, ("Connection", "close")], exc_info)
    return start


def create_app(loaded: LoadedModel, settings: Settings, *, max_concurrent_transforms: int = 1,
               offload_large: bool = False) -> ServeApp:
    """The WSGI app serving ``loaded`` as ``settings`` say. ``max_concurrent_transforms`` is what
    /execution-parameters advertises to batch transform when SAGEMAKER_MAX_CONCURRENT_TRANSFORMS
    does not say (the server's worker count); ``offload_large`` is for gevent workers (see
    OFFLOAD_BYTES). Raises OutputError (a ValueError) when the selected outputs do not fit the model."""
    flask_app = create_flask_app(settings, max_concurrent_transforms)
    return ServeApp(loaded, settings, flask_app, offload_large=offload_large)


def create_flask_app(settings: Settings, max_concurrent_transforms: int = 1) -> Flask:
    """The routes off the hot path: /ping, /execution-parameters, JSON 404/405/500
    (shared by the single-model and the multi-model app)."""
    flask_app = Flask(__name__)
    flask_app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    execution_parameters = json.dumps({
        "MaxConcurrentTransforms": settings.max_concurrent_transforms or max_concurrent_transforms,
        "BatchStrategy": settings.batch_strategy,
        "MaxPayloadInMB": max(1, settings.max_payload_bytes // (1024 * 1024)),
    })

    @flask_app.get("/ping")
    def ping():
        return Response(status=200)

    @flask_app.get("/execution-parameters")
    def get_execution_parameters():
        return Response(execution_parameters, status=200, content_type=JSON_TYPE)

    @flask_app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        # 404 for unknown routes, 405 for a wrong method, ...
        response = Response(_error_body(error.description or error.name), status=error.code or 500,
                            content_type=JSON_TYPE)
        if getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @flask_app.errorhandler(Exception)
    def internal_error(error: Exception):
        log.exception("internal error")
        return Response(_error_body("internal error; the server log has the details"), status=500,
                        content_type=JSON_TYPE)

    return flask_app


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()
