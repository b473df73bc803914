"""Fuzzed requests against any server speaking the SageMaker contract.

A case is built from ``(seed, index)`` alone (its own ``random.Random``), so a run of
100,000 is reproducible and any one case can be rebuilt without the others. Each case
starts from a valid body of one supported content type (rows of ``num_feature``
values) and is then, mostly, mutated:

* at the structure level: wide and ragged rows, many rows, deep JSON nesting, huge and
  tiny numbers, ``inf``/``nan``/hex/exponent spellings, empty bodies, invalid UTF-8,
  the body of another type, .npy headers that lie about their shape or dtype;
* at the byte level: flipped, inserted, deleted and duplicated bytes, bodies cut short;
* in the headers: wrong, missing and odd ``Content-Type`` (charsets, parameters),
  odd ``Accept``, unsupported methods and paths;
* in the framing: chunked bodies, a Content-Length that promises more than is sent
  (then the client half-closes), or less.

Requests go over raw sockets (so that framing can lie) from several threads, each on
its own keep-alive connection. The oracle per answer: never a 5xx; every 4xx from the
application is a JSON ``{"error": "..."}``; an unmutated valid request gets 200; an
answer arrives within the client timeout. Failing cases are written as JSON lines
(body in base64) that :func:`replay` sends again.
"""
from __future__ import annotations

import base64
import io
import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlsplit

import numpy as np

CONTENT_TYPES = ("text/csv", "application/json", "application/jsonlines", "text/libsvm", "application/x-npy",
                 "application/x-recordio-protobuf")
CLIENT_TIMEOUT_S = 15.0
_SPELLINGS = ["inf", "-inf", "Infinity", "nan", "NaN", "-nan", "0x1p3", "1e38", "3.5e38", "1e39", "-1e400",
              "1e-45", "1e-400", "1E5", "+1", "1.", ".5", "-0", "1_000", "١", "0" * 50 + "1", "9" * 400,
              "1e", "--1", "true", "null", '"1"', "[1]", "{}"]
_TOKENS = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\x00", b"[", b"]", b"{", b"}", b",", b"\n", b"\r\n", b":", b" ",
           b"\t", b'"', b"\\u0000", b"|", b"#", b"nan", b"-", b"e", b"9" * 30]
_ACCEPTS = [None, None, None, "*/*", "application/json", "application/jsonlines", "text/csv", "text/html",
            "application/*", "text/*;q=0", "application/json;q=abc", "\x00", "*/*;q=nan", ",,,", "a" * 500]
_METHODS = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO"]
_PATHS = ["/invocations/", "/Invocations", "/invocations?x=1&y=%ff", "/ping", "/execution-parameters",
          "/../../etc/passwd", "/%00", "/" + "a" * 2000, "/invocations%2F", "//invocations"]


@dataclass(frozen=True)
class Case:
    """One request: how it was made (``kind``), and what to send."""
    index: int
    kind: str                    # e.g. "text/csv valid", "application/json deep", "method"
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    framing: str = "length"      # length | chunked | short (Content-Length over the body, then half-close)
    expect_ok: bool = False      # an unmutated valid request: must be answered 200

    def to_dict(self) -> dict:
        return {"index": self.index, "kind": self.kind, "method": self.method, "path": self.path,
                "headers": list(self.headers), "framing": self.framing, "expect_ok": self.expect_ok,
                "body_b64": base64.b64encode(self.body).decode()}

    @classmethod
    def from_dict(cls, data: dict) -> "Case":
        return cls(index=data["index"], kind=data["kind"], method=data["method"], path=data["path"],
                   headers=tuple(tuple(h) for h in data["headers"]), body=base64.b64decode(data["body_b64"]),
                   framing=data["framing"], expect_ok=data["expect_ok"])


# --- valid bodies ------------------------------------------------------------------------------

def _values(rng: random.Random, n: int) -> list[float | None]:
    """n feature values: mostly plain numbers, some missing (None)."""
    out = []
    for _ in range(n):
        pick = rng.random()
        out.append(None if pick < 0.15 else float(rng.randrange(-5, 50)) if pick < 0.5
                   else round(rng.uniform(-1e3, 1e3), rng.randrange(0, 8)))
    return out


def _rows(rng: random.Random, num_feature: int, n_rows: int) -> list[list[float | None]]:
    return [_values(rng, num_feature) for _ in range(n_rows)]


def _text(value) -> str:
    return "" if value is None else repr(value)


def encode_rows(content_type: str, rows: list[list], rng: random.Random) -> bytes:
    """A valid body of ``content_type`` for ``rows`` (None = missing), in one of the
    spellings the SageMaker SDK's serializers and the stock container accept."""
    if content_type == "text/csv":
        return ("\n".join(",".join(_text(v) for v in row) for row in rows) + rng.choice(["", "\n"])).encode()
    if content_type == "application/json":
        shape = rng.randrange(4)
        if shape == 0:
            document = rows
        elif shape == 1:
            document = {"instances": rows}
        elif shape == 2:
            document = {"instances": [{"features": row} for row in rows]}
        else:
            document = rows[0] if len(rows) == 1 else rows
        return json.dumps(document).encode()
    if content_type == "application/jsonlines":
        return "\n".join(json.dumps(row if rng.random() < 0.5 else {"features": row}) for row in rows).encode()
    if content_type == "text/libsvm":
        lines = []
        for row in rows:
            pairs = " ".join(f"{i}:{v!r}" for i, v in enumerate(row) if v is not None)
            lines.append((f"{rng.randrange(2)} " if rng.random() < 0.5 else "") + pairs)
        return "\n".join(lines).encode()
    arrays = [np.array([np.nan if v is None else v for v in row], dtype=np.float64) for row in rows]
    if content_type == "application/x-npy":
        dtype = rng.choice(["<f4", "<f8", ">f4", "<f2"])
        ragged = len({a.size for a in arrays}) > 1
        array = np.concatenate(arrays) if ragged or (len(rows) == 1 and rng.random() < 0.5) else np.stack(arrays)
        buffer = io.BytesIO()
        np.save(buffer, array.astype(dtype))
        return buffer.getvalue()
    if content_type == "application/x-recordio-protobuf":
        from serve.recordio import encode_dense, encode_sparse

        encode = encode_dense if rng.random() < 0.6 else encode_sparse
        return b"".join(encode(a.astype(np.float32).reshape(1, -1)) for a in arrays)
    raise ValueError(f"no encoder for {content_type}")


# --- mutations ---------------------------------------------------------------------------------

def _structure_mutation(rng: random.Random, content_type: str, num_feature: int) -> tuple[str, bytes]:
    """A body that is wrong (or odd) as a whole: (mutation name, body)."""
    name = rng.choice(["wide", "ragged", "many-rows", "deep", "numbers", "empty", "utf8", "other-type",
                       "npy-header", "zero-features"])
    if name == "wide":
        rows = _rows(rng, num_feature * rng.choice([2, 10, 100]) + 1, rng.randrange(1, 3))
    elif name == "ragged":
        rows = [_values(rng, max(0, num_feature + rng.randrange(-3, 4))) for _ in range(rng.randrange(2, 6))]
    elif name == "many-rows":
        rows = _rows(rng, num_feature, rng.choice([100, 300, 1000]))
    elif name == "zero-features":
        rows = [[] for _ in range(rng.randrange(1, 4))]
    elif name == "numbers":
        rows = _rows(rng, num_feature, rng.randrange(1, 4))
        body = encode_rows(content_type, rows, rng) if content_type not in ("application/x-npy",
                                                                            "application/x-recordio-protobuf") else b""
        for _ in range(rng.randrange(1, 4)):
            target = rng.choice(["1.0", "2.0", "3.0", "0.0", "5", "1"]).encode()
            body = body.replace(target, rng.choice(_SPELLINGS).encode(), 1)
        return name, body or rng.choice(_SPELLINGS).encode()
    elif name == "deep":
        depth = rng.choice([2, 40, 1000, 5000, 100_000])
        inner = ",".join(["1"] * num_feature)
        return name, ("[" * depth + inner + "]" * (depth if rng.random() < 0.7 else 0)).encode()
    elif name == "empty":
        return name, rng.choice([b"", b" ", b"\n", b"\n\n\n", b"\r\n", b"\t", b"{}", b"[]", b"[[]]", b"null"])
    elif name == "utf8":
        body = encode_rows(content_type, _rows(rng, num_feature, 1), rng)
        at = rng.randrange(len(body) + 1)
        return name, body[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\xf0\x9f"]) + body[at:]
    elif name == "other-type":
        other = rng.choice([t for t in CONTENT_TYPES if t != content_type])
        return name, encode_rows(other, _rows(rng, num_feature, rng.randrange(1, 3)), rng)
    else:   # npy-header: a valid .npy header whose text is edited
        buffer = io.BytesIO()
        np.save(buffer, np.zeros((rng.randrange(1, 3), num_feature), dtype=np.float32))
        body = buffer.getvalue()
        edit = rng.choice([(b"'<f4'", rng.choice([b"'|O'", b"'<c8'", b"'<U3'", b"[('a','<f4')]", b"'<f4', 'x': 1",
                                                  b"'\x08b1'", b"'|,1'"])),
                           (b"'shape': (", rng.choice([b"'shape': (999999999999, ", b"'shape': (-1, ",
                                                      b"'shape': (2**62, ", b"'shape': (((((", b"'shape': (1, 1, "])),
                           (b"False", rng.choice([b"True", b"1", b"None"])),
                           (b"\x01\x00", rng.choice([b"\x03\x00", b"\x02\x00", b"\x01\x01"]))])
        return name, body.replace(edit[0], edit[1], 1)
    return name, encode_rows(content_type, rows, rng)


def _byte_mutations(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randrange(1, 5)):
        at = rng.randrange(len(data) + 1)
        op = rng.randrange(6)
        if op == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[at:at] = rng.choice(_TOKENS)
        elif op == 2:
            del data[at:at + rng.randrange(1, 9)]
        elif op == 3:
            del data[at:]
        elif op == 4 and len(data) < 100_000:
            data = data + data
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    return bytes(data)


def _content_type_header(rng: random.Random, content_type: str) -> str | None:
    if rng.random() < 0.8:   # most cases reach the decoder
        return content_type
    return rng.choice([None, "", content_type.upper(), content_type + "; charset=utf-8",
                       content_type + "; charset=latin-1", content_type + "; charset=utf-16",
                       content_type + ";charset=\"utf-8\"", "text/csv; label_size=1", "text/csv; label_size=2",
                       "text/csv; label_size=", "text/plain", "multipart/form-data; boundary=x",
                       "application/octet-stream", content_type + "; " + "x" * 3000, content_type + ";;;",
                       "application/x-recordio", "\xff\xfe", "text/csv\x00", "*/*", content_type + " ; q=1"])


def make_case(seed: int, index: int, num_feature: int, content_types: tuple[str, ...] = CONTENT_TYPES) -> Case:
    """Case ``index`` of the run with ``seed``: the same arguments always give the same case."""
    rng = random.Random(seed * 1_000_003 + index)
    content_type = content_types[index % len(content_types)]
    kind_pick = rng.random()
    accept = rng.choice(_ACCEPTS) if rng.random() < 0.15 else rng.choice([None, "*/*", "application/json"])
    method, path, framing, expect_ok = "POST", "/invocations", "length", False
    if kind_pick < 0.10:
        kind = "valid"
        body = encode_rows(content_type, _rows(rng, num_feature, rng.randrange(1, 6)), rng)
        accept = rng.choice([None, "*/*", "application/json", "text/csv", "application/jsonlines"])
        header = content_type
        expect_ok = True
    else:
        header = _content_type_header(rng, content_type)
        if kind_pick < 0.45:
            kind, body = _structure_mutation(rng, content_type, num_feature)
            if rng.random() < 0.3:
                kind, body = kind + "+bytes", _byte_mutations(rng, body)
        else:
            kind = "bytes"
            body = _byte_mutations(rng, encode_rows(content_type, _rows(rng, num_feature, rng.randrange(1, 6)), rng))
        framing_pick = rng.random()
        if framing_pick < 0.06:
            framing = "chunked"
        elif framing_pick < 0.09 and body:
            framing = "short"
        elif framing_pick < 0.13:
            method = rng.choice(_METHODS)
            kind = "method"
        elif framing_pick < 0.16:
            path = rng.choice(_PATHS)
            kind = "path"
    headers = []
    if header is not None:
        headers.append(("Content-Type", header))
    if accept is not None:
        headers.append(("Accept", accept))
    return Case(index, f"{content_type} {kind}", method, path, tuple(headers), body, framing, expect_ok)


def generate(seed: int, count: int, num_feature: int, start: int = 0,
             content_types: tuple[str, ...] = CONTENT_TYPES) -> Iterable[Case]:
    for index in range(start, start + count):
        yield make_case(seed, index, num_feature, content_types)


# --- sending -----------------------------------------------------------------------------------

@dataclass
class Answer:
    status: int | None            # None: no answer (closed, timed out)
    content_type: str
    body: bytes
    error: str = ""
    seconds: float = 0.0
    will_close: bool = False      # the answer said Connection: close (or was HTTP/1.0)
    after: Case | None = None     # no answer on a kept-alive connection: the case answered on it before

    @property
    def http_layer_refusal(self) -> bool:
        """A 400 with no body, no content type and Connection: close: the HTTP server's own
        refusal of a request it could not parse (granian's hyper, a NUL byte in a header),
        before any of serve's code saw it; serve has no hook to make it JSON."""
        return self.status == 400 and not self.body and not self.content_type and self.will_close


def _request_bytes(case: Case, host: str, close: bool) -> bytes:
    lines = [f"{case.method} {case.path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in case.headers]
    body = case.body
    if case.framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        chunks, at = [], 0
        step = max(1, len(body) // 3 or 1)
        while at < len(body):
            chunk = body[at:at + step]
            chunks.append(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            at += step
        body = b"".join(chunks) + b"0\r\n\r\n"
    elif case.framing == "short":
        lines.append(f"Content-Length: {len(body) + 1 + case.index % 1000}")
    elif case.method not in ("GET", "HEAD", "OPTIONS", "TRACE") or body:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


class Connection:
    """One keep-alive connection to ``url``, reopened whenever the server or a case closes it."""

    def __init__(self, url: str, timeout_s: float = CLIENT_TIMEOUT_S):
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.host = parts.netloc
        self.timeout_s = timeout_s
        self.sock: socket.socket | None = None
        self.last_case: Case | None = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, case: Case) -> Answer:
        close = case.framing == "short" or case.method not in ("POST", "GET")
        started = time.monotonic()
        kept_alive = self.sock is not None
        try:
            if self.sock is None:
                self.sock = socket.create_connection(self.address, timeout=self.timeout_s)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(_request_bytes(case, self.host, close))
            if case.framing == "short":
                try:
                    self.sock.shutdown(socket.SHUT_WR)   # the rest of the promised body never comes
                except OSError:
                    pass   # the server answered (415, 406...) and closed before the body: read that
            response = HTTPResponse(self.sock, method=case.method)
            response.begin()
            body = response.read()
            answer = Answer(response.status, response.getheader("Content-Type", ""), body,
                            seconds=time.monotonic() - started, will_close=bool(response.will_close))
            if close or response.will_close:
                self.close()
            self.last_case = case
            return answer
        except (OSError, HTTPException) as exc:
            self.close()
            return Answer(None, "", b"", error=f"{type(exc).__name__}: {exc}"[:200],
                          seconds=time.monotonic() - started, after=self.last_case if kept_alive else None)


def problem(case: Case, answer: Answer) -> str | None:
    """What is wrong with ``answer`` to ``case``, or None. (An HTTP-layer refusal,
    ``Answer.http_layer_refusal``, is a problem here; ``run_fuzz`` counts those apart.)"""
    if answer.status is None and answer.after is not None:
        # the server closed a kept-alive connection after its previous answer, which did not say so
        return (f"no answer on a kept-alive connection ({answer.error}): closed after the answer to case "
                f"{answer.after.index} ({answer.after.kind}), which did not say Connection: close")
    if answer.status is None:
        return f"no answer ({answer.error})"
    if answer.status >= 500:
        return f"status {answer.status}"
    if case.expect_ok and answer.status != 200:
        return f"valid request refused with {answer.status}: {answer.body[:200]!r}"
    if 400 <= answer.status < 500 and case.method != "HEAD":
        try:
            message = json.loads(answer.body)["error"]
        except (ValueError, KeyError, TypeError):
            return f"status {answer.status} without a JSON error message: {answer.body[:120]!r}"
        if not isinstance(message, str) or not message:
            return f"status {answer.status} with an empty error message"
    return None


@dataclass
class PingWatch:
    """GET /ping every ``interval_s`` on its own connection while a scenario runs."""
    url: str
    interval_s: float = 0.25
    timeout_s: float = 2.0
    checks: int = 0
    failures: int = 0
    max_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "PingWatch":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _run(self) -> None:
        connection = Connection(self.url, timeout_s=self.timeout_s)
        ping = Case(-1, "ping", "GET", "/ping", (), b"")
        while not self._stop.wait(self.interval_s):
            answer = connection.send(ping)
            self.checks += 1
            self.max_s = max(self.max_s, answer.seconds)
            if answer.status != 200 or answer.seconds > self.timeout_s:
                self.failures += 1

    def to_dict(self) -> dict:
        return {"checks": self.checks, "failures": self.failures, "max_ms": round(self.max_s * 1000, 1)}


@dataclass
class FuzzResult:
    requests: int
    seconds: float
    statuses: dict[int, int]          # status -> count (0: no answer)
    failures: list[dict]              # {"problem", "case"} for each failing case (capped)
    failure_count: int
    by_problem: dict[str, int]
    ping: dict
    seed: int
    http_layer_refusals: int = 0      # Answer.http_layer_refusal: counted, not failing

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def to_dict(self) -> dict:
        return {"requests": self.requests, "seconds": round(self.seconds, 2), "seed": self.seed,
                "rate": round(self.requests / self.seconds, 1) if self.seconds else None,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "server_errors": self.server_errors, "failure_count": self.failure_count,
                "by_problem": self.by_problem, "http_layer_refusals": self.http_layer_refusals, "ping": self.ping}


MAX_SAVED_FAILURES = 1000


def run_fuzz(url: str, *, seed: int, count: int, num_feature: int, connections: int = 8,
             content_types: tuple[str, ...] = CONTENT_TYPES, failures_path: Path | None = None,
             progress: Callable[[str], None] | None = None) -> FuzzResult:
    """Send ``count`` fuzzed cases to ``url`` from ``connections`` threads, watch /ping meanwhile;
    failing cases go to ``failures_path`` (JSON lines, for :func:`replay`; with the case answered
    before on the same connection when that is what broke it)."""
    lock = threading.Lock()
    refusals = [0]
    next_index = iter(range(count))
    statuses: Counter = Counter()
    by_problem: Counter = Counter()
    failures: list[dict] = []
    done = [0]

    def worker() -> None:
        connection = Connection(url)
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            case = make_case(seed, index, num_feature, content_types)
            answer = connection.send(case)
            refused = answer.http_layer_refusal and not case.expect_ok
            wrong = None if refused else problem(case, answer)
            with lock:
                statuses[answer.status or 0] += 1
                done[0] += 1
                refusals[0] += refused
                if wrong:
                    by_problem[f"{case.kind.split()[0]}: {wrong.split(':')[0][:60]}"] += 1
                    if len(failures) < MAX_SAVED_FAILURES:
                        failures.append({"problem": wrong, "case": case.to_dict(),
                                         **({"after": answer.after.to_dict()} if answer.after else {})})
                if progress and done[0] % 10_000 == 0:
                    progress(f"  fuzz: {done[0]:,} of {count:,} sent, {sum(by_problem.values())} failing")
        connection.close()

    started = time.monotonic()
    with PingWatch(url) as ping:
        threads = [threading.Thread(target=worker) for _ in range(connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    seconds = time.monotonic() - started
    if failures_path is not None and failures:
        Path(failures_path).parent.mkdir(parents=True, exist_ok=True)
        Path(failures_path).write_text("".join(json.dumps(f) + "\n" for f in failures))
    return FuzzResult(requests=count, seconds=seconds, statuses=dict(statuses), failures=failures,
                      failure_count=sum(by_problem.values()), by_problem=dict(by_problem), ping=ping.to_dict(),
                      seed=seed, http_layer_refusals=refusals[0])


def replay(url: str, failures_path: Path) -> list[tuple[Case, Answer, str | None]]:
    """Send the saved failing cases again (each after the case that preceded it on its
    connection, where saved): (case, answer, problem or None) for each."""
    out = []
    connection = Connection(url)
    for line in Path(failures_path).read_text().splitlines():
        saved = json.loads(line)
        case = Case.from_dict(saved["case"])
        if "after" in saved:
            connection.close()
            connection.send(Case.from_dict(saved["after"]))
        answer = connection.send(case)
        out.append((case, answer, problem(case, answer)))
    connection.close()
    return out
