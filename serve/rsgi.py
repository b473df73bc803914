"""granian's RSGI interface in front of :class:`serve.app.ServeApp` (``SERVE_GRANIAN_INTERFACE=rsgi``):
the same decode, predict and encode, with a deadline on the request body.

Why one would take RSGI over granian's WSGI interface (the default, about half the CPU per
request): under WSGI, ``wsgi.input.read()`` holds one of the worker's Python threads until the
body has come or ``serve.body_deadline`` ends the read, so as many clients as the worker has
threads, stalling their bodies, make the others wait until the deadline. Here the body is
awaited on the worker's event loop (granian reads it in Rust), and a slow client holds nothing
but its connection; past ``body_timeout_s``
(``SAGEMAKER_MODEL_SERVER_TIMEOUT``) the wait is cancelled, which drops granian's read of the
body, and the request is answered 408 with ``Connection: close``: granian closes the connection.

Small requests (one bid, a few rows) are decoded, predicted and encoded on the event loop itself:
microseconds, less than a hand-off to a thread. Bodies from ``serve.app.OFFLOAD_BYTES`` on go to
a pool of ``threads`` threads, so the loop keeps answering ``/ping`` (SageMaker's timeout 2 s)
while a 6 MB request computes; those decode in pieces and hand the GIL back between them
(``serve.app.PIECE_BYTES``). Every other route goes to the Flask app, called on the loop with
an environ built from the RSGI scope (those routes read no body).
"""
from __future__ import annotations

import asyncio
import io
import logging
import sys

from serve.app import JSON_TYPE, OFFLOAD_BYTES, ServeApp, _error_body
from serve.codecs import ENCODERS, RequestError

log = logging.getLogger(__name__)

_INVOCATIONS = "/invocations"
# How often the late body reads are looked for: a stalled client is cut off between the timeout and
# this much after it.
SWEEP_S = 0.5


class _Late(Exception):
    """A body read the sweeper cancelled: past its deadline."""


class RSGIApp:
    """The RSGI app (granian calls ``__rsgi__``) serving ``app`` (a ServeApp); ``threads``:
    threads per worker that decode and predict large requests."""

    def __init__(self, app: ServeApp, threads: int):
        self.app = app
        self.threads = threads
        self.body_timeout_s = app.body_timeout_s
        self.max_payload_bytes = app.max_payload_bytes
        self._pool = None
        # Body reads in progress (granian's future -> the loop time it must be done by), those the
        # sweeper cancelled, and the loop that sweeps them (this worker's, set at its first request).
        self._deadlines: dict[object, float] = {}
        self._late: set[object] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Response headers per content type, built once (granian adds Content-Length).
        self.type_headers = {accept: [("content-type", accept)] for accept in (*ENCODERS, JSON_TYPE)}

    async def __rsgi__(self, scope, proto):
        if scope.proto != "http":   # websockets are off in granian's options; nothing else comes
            return
        if scope.path != _INVOCATIONS:
            return self._other_route(scope, proto)
        app, body = self.app, None
        try:
            if scope.method != "POST":
                raise RequestError(405, "/invocations takes POST")
            headers = scope.headers
            decode, accept = app.choose_codecs(headers.get("content-type"), headers.get("accept"))
            length = app.declared_length(headers.get("content-length"))
            body = app.checked_body(await self._read_body(proto, length), length)
            if len(body) >= OFFLOAD_BYTES:
                answer = await asyncio.get_running_loop().run_in_executor(self._large_pool(), app.infer,
                                                                          body, decode, accept)
            else:
                answer = app.infer(body, decode, accept)
            proto.response_bytes(200, self.type_headers[accept], answer)
            return
        except RequestError as error:
            status, message = error.status, error.message
        except Exception:   # a bug or a native failure: log it, answer 500, keep the worker
            log.exception("internal error on POST /invocations")
            status, message = 500, "internal error; the server log has the details"
        headers = [("content-type", JSON_TYPE)]
        if status == 408 or (body is None and _has_body(scope.headers)):
            # a body left unread (or the rest of a slow one): granian closes this connection after
            # the answer, so say so, or the client's next request on it would be lost
            headers.append(("connection", "close"))
        if status == 405:
            headers.append(("allow", "POST"))
        proto.response_bytes(status, headers, _error_body(message))

    async def _read_body(self, proto, length: int | None) -> bytes:
        """The whole body within body_timeout_s (408 past it). With a declared length granian
        reads that many bytes; a chunked body is read a chunk at a time, to one byte past the limit."""
        if self._loop is None:   # the first request of this worker: start the sweeper on its loop
            self._loop = asyncio.get_running_loop()
            self._loop.call_later(SWEEP_S, self._sweep)
        deadline = self._loop.time() + self.body_timeout_s
        try:
            if length is not None:
                return await self._before(proto(), deadline)
            limit, pieces, size = self.max_payload_bytes, [], 0
            chunks = proto.__aiter__()
            while size <= limit:
                chunk = await self._before(chunks.__anext__(), deadline)
                if not chunk:
                    break
                pieces.append(chunk)
                size += len(chunk)
            return b"".join(pieces)
        except _Late:
            raise RequestError(408, f"the request body did not arrive within {self.body_timeout_s:g} s") from None
        except Exception:   # granian's protocol error: the client closed the connection mid-body
            return b""

    async def _before(self, future, deadline: float):
        """``await future`` (granian's future of the body or of a chunk), cancelled by ``_sweep``
        once ``deadline`` has passed. A dict entry per read rather than asyncio.timeout, whose
        timer cost about 15 us a request, ten times the rest of this wait."""
        self._deadlines[future] = deadline
        try:
            return await future
        except asyncio.CancelledError:
            if future not in self._late:   # not the sweeper's doing: the task itself was cancelled
                raise
            self._late.discard(future)
            raise _Late from None
        finally:
            self._deadlines.pop(future, None)

    def _sweep(self) -> None:
        """Cancel the body reads past their deadline: cancelling granian's future drops its read
        of the body, and the awaiting request gets CancelledError (answered 408)."""
        now = self._loop.time()
        for future, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[future]
                self._late.add(future)
                future.cancel()
        self._loop.call_later(SWEEP_S, self._sweep)

    def _large_pool(self):
        """This worker's pool for large requests, made on first use (after the fork)."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="serve-large")
        return self._pool

    def _other_route(self, scope, proto) -> None:
        """/ping, /execution-parameters, the JSON 404/405: the Flask app, called as WSGI."""
        answer = []

        def start_response(status, headers, exc_info=None):
            answer[:] = [int(status[:3]), [(k, v) for k, v in headers if k.lower() != "content-length"]]

        chunks = self.app.flask_app(_environ(scope), start_response)
        try:
            body = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        if _has_body(scope.headers):   # these routes read no body: granian closes the connection after
            answer[1].append(("Connection", "close"))
        proto.response_bytes(answer[0], answer[1], body)


def _has_body(headers) -> bool:
    """Whether the request came with a body (declared, or chunked)."""
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


def _environ(scope) -> dict:
    """A WSGI environ for the RSGI scope of a request whose body nobody reads."""
    host, _, port = scope.server.rpartition(":")
    environ = {
        "REQUEST_METHOD": scope.method, "PATH_INFO": scope.path, "QUERY_STRING": scope.query_string,
        "SERVER_NAME": host, "SERVER_PORT": port, "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
        "REMOTE_ADDR": scope.client.rpartition(":")[0], "SCRIPT_NAME": "",
        "wsgi.version": (1, 0), "wsgi.url_scheme": scope.scheme, "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    for name, value in scope.headers.items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ["HTTP_" + key] = value
    return environ

