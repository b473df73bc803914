"""The ad server's side: ask the bid filter whether to bid, within a hard time budget.

Copy this file into the bidder, or import it (``pip install xgb-neo-serve[deploy]``);
it needs only boto3. ::

    from deploy.client import BidFilter

    bid_filter = BidFilter("bid-filter", timeout_ms=15, threshold=0.05)   # one per process
    if bid_filter.should_bid([2, 0, 0.0, 7.0, 3.0, 20.0, 2]):
        ...                                                                # go on to price the bid

What it does, and why:

* **One pooled client.** Every call goes through one ``sagemaker-runtime``
  client whose connection pool is as large as the concurrency
  (``max_pool_connections``) with TCP keep-alive, so a call reuses a warm TLS
  connection instead of paying a handshake (tens of ms) inside the budget.
  Create one :class:`BidFilter` per process and share it between threads.
* **A hard timeout.** ``timeout_ms`` bounds the whole call as the caller sees
  it (the socket's read timeout, and the wait for a batch's answer); there are
  no retries, since a retry cannot fit in an ad auction's budget.
* **Fail open.** On a timeout, throttling, a model error or any other failure
  :meth:`BidFilter.should_bid` answers True: bid as if the filter said yes. A
  filter that is down costs wasted bids, never lost auctions. :attr:`stats`
  counts how often that happened.
* **Micro-batching (optional).** With ``batch_max_rows`` > 1, rows from many
  concurrent callers are collected for at most ``batch_max_wait_ms`` (or until
  ``batch_max_rows`` are waiting) into one request of many CSV rows; each caller
  gets its own row's answer. SageMaker's per-invocation overhead and the
  server's per-request cost are then paid once per batch, at the price of up to
  ``batch_max_wait_ms`` of added latency.

``make_runtime_client`` is the client alone, for other uses (``xgb-deploy
loadtest`` measures through it).
"""
from __future__ import annotations

import math
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Sequence

import boto3
from botocore.config import Config

CSV = "text/csv"


def make_runtime_client(region: str | None = None, *, pool: int = 64, timeout_ms: float = 20.0,
                        connect_timeout_ms: float = 1000.0, session: Any = None) -> Any:
    """A ``sagemaker-runtime`` client for low-latency calls from many threads.

    ``pool`` connections kept alive (size it to the concurrency: a thread that
    finds none free opens a new one), TCP keep-alive, a read timeout of
    ``timeout_ms`` and no retries (the caller decides what a failure means).
    The connect timeout is longer: a new connection is made rarely, and giving
    it up early would only make the next call open another.
    """
    config = Config(max_pool_connections=pool, tcp_keepalive=True,
                    read_timeout=timeout_ms / 1000.0, connect_timeout=connect_timeout_ms / 1000.0,
                    retries={"mode": "standard", "total_max_attempts": 1},
                    user_agent_extra="xgb-neo-serve-client/0.1")
    return (session or boto3.session.Session(region_name=region)).client("sagemaker-runtime", config=config)


def encode_row(row: Sequence[float | None]) -> bytes:
    """One CSV line (no header) as the server reads it; None and NaN are missing values."""
    return ",".join("nan" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))
                    for v in row).encode()


def decode_scores(body: bytes, rows: int) -> list[float]:
    """One score per row from a text/csv answer; ValueError unless there are ``rows`` of them.

    The server writes one score per row as one comma-separated line (as the stock
    SageMaker XGBoost container does), and selected outputs as one line per row
    (the first field is taken then)."""
    lines = [line for line in body.split(b"\n") if line.strip()]
    if len(lines) == 1:
        scores = [float(v) for v in lines[0].split(b",")]
        if rows > 1 or len(scores) == 1:
            if len(scores) != rows:
                raise ValueError(f"{len(scores)} answers for {rows} rows")
            return scores
    if len(lines) != rows:
        raise ValueError(f"{len(lines)} answers for {rows} rows")
    return [float(line.split(b",", 1)[0]) for line in lines]


@dataclass
class Stats:
    """What a :class:`BidFilter` did; read it for monitoring."""
    calls: int = 0              # should_bid / score calls
    requests: int = 0           # InvokeEndpoint calls made (fewer than calls when batching)
    rows: int = 0               # rows sent
    failed_open: int = 0        # calls answered by the fail-open policy
    errors: dict[str, int] = field(default_factory=dict)   # by kind: Timeout, ThrottlingException, ModelError, ...
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, calls: int = 0, requests: int = 0, rows: int = 0) -> None:
        with self._lock:
            self.calls += calls
            self.requests += requests
            self.rows += rows

    def count_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            self.failed_open += 1


def error_kind(exc: BaseException) -> str:
    """A short name for what went wrong: the AWS error code, or Timeout, or the exception's type."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error", {}).get("Code"):
        return str(response["Error"]["Code"])
    name = type(exc).__name__
    return "Timeout" if "Timeout" in name or isinstance(exc, (TimeoutError, FutureTimeout)) else name


class BidFilter:
    """The bid/no-bid filter behind a SageMaker endpoint, with a hard timeout and fail-open."""

    def __init__(self, endpoint_name: str, *, timeout_ms: float = 20.0, threshold: float = 0.5,
                 batch_max_rows: int = 1, batch_max_wait_ms: float = 1.0, pool: int = 64,
                 region: str | None = None, client: Any = None):
        if timeout_ms <= 0 or batch_max_rows < 1 or batch_max_wait_ms < 0:
            raise ValueError("timeout_ms must be positive, batch_max_rows at least 1, batch_max_wait_ms >= 0")
        self.endpoint_name = endpoint_name
        self.timeout_s = timeout_ms / 1000.0
        self.threshold = threshold
        self.batch_max_rows = batch_max_rows
        self.batch_max_wait_s = batch_max_wait_ms / 1000.0
        self.client = client or make_runtime_client(region, pool=pool, timeout_ms=timeout_ms)
        self.stats = Stats()
        self._queue: queue.SimpleQueue[tuple[bytes, Future] | None] = queue.SimpleQueue()
        self._batcher: threading.Thread | None = None
        self._senders: ThreadPoolExecutor | None = None
        if batch_max_rows > 1:
            # Batches go out from a pool, so that one in flight does not hold back the next.
            self._senders = ThreadPoolExecutor(max_workers=pool, thread_name_prefix="bid-filter-send")
            self._batcher = threading.Thread(target=self._collect, name="bid-filter-batcher", daemon=True)
            self._batcher.start()

    # --- what the bidder calls -------------------------------------------------
    def should_bid(self, row: Sequence[float | None]) -> bool:
        """True when the model's score reaches the threshold, or when no score came in time (fail open)."""
        score = self.score(row)
        return True if score is None else score >= self.threshold

    def score(self, row: Sequence[float | None]) -> float | None:
        """The model's score of ``row``; None (counted in :attr:`stats`) when it failed or came too late."""
        self.stats.count(calls=1)
        line = encode_row(row)
        try:
            if self._batcher is None:
                return self._send([line])[0]
            answer: Future = Future()
            self._queue.put((line, answer))
            return answer.result(timeout=self.timeout_s)
        except Exception as exc:            # fail open on anything: the auction must not wait or crash
            self.stats.count_error(error_kind(exc))
            return None

    def close(self) -> None:
        """Stop the batcher (answering what is queued); the client's connections close with it."""
        if self._batcher is not None:
            self._queue.put(None)
            self._batcher.join(timeout=1.0)
            self._batcher = None
        if self._senders is not None:
            self._senders.shutdown(wait=True)
            self._senders = None

    def __enter__(self) -> "BidFilter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- one request -----------------------------------------------------------
    def _send(self, lines: list[bytes]) -> list[float]:
        self.stats.count(requests=1, rows=len(lines))
        answer = self.client.invoke_endpoint(EndpointName=self.endpoint_name, ContentType=CSV, Accept=CSV,
                                             Body=b"\n".join(lines) + b"\n")
        return decode_scores(answer["Body"].read(), len(lines))

    # --- micro-batching --------------------------------------------------------
    def _collect(self) -> None:
        """Take the first waiting row, then more for at most batch_max_wait or up to batch_max_rows, send."""
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.perf_counter() + self.batch_max_wait_s
            stop = False
            while len(batch) < self.batch_max_rows:
                left = deadline - time.perf_counter()
                try:
                    item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            assert self._senders is not None
            self._senders.submit(self._answer, batch)
            if stop:
                return

    def _answer(self, batch: list[tuple[bytes, Future]]) -> None:
        live = [(line, f) for line, f in batch if f.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            scores = self._send([line for line, _ in live])
        except Exception as exc:
            for _, f in live:
                f.set_exception(exc)
            return
        for (_, f), value in zip(live, scores):
            f.set_result(value)
