"""A deadline on request bodies for granian's WSGI interface, which has none of its own.

Under granian's WSGI interface the app reads ``wsgi.input`` in one of the worker's Python
threads, and the read blocks (in Rust, without the GIL) until the body has come: a client that
sends its headers and then stalls, or trickles its body a byte at a time, would hold that
thread for ever. granian offers no timeout for it, and the WSGI environ names no connection to
close. What can end such a read is its connection ending: hyper then ends the body, the read
returns what came, and the app answers 408 (``serve.app.ServeApp``).

So each worker runs a watchdog thread (:class:`BodyDeadline`). The app records every body read
it starts (a dict entry per read, about 0.2 µs); while a read is pending, the watchdog looks at
the worker's TCP connections every ``SWEEP_S`` through the kernel's ``TCP_INFO`` (no packet is
read or sent) and shuts the reading side of a connection (``shutdown(SHUT_RD)``: the socket
stays granian's, the answer can still be written) when:

(a) it received request bytes after the last bytes it sent (a request in progress, by the
    kernel's times of the last data received and sent), and has sent nothing for
    ``timeout_s`` since the watchdog first saw it so: a stalled or trickling body, cut between
    ``timeout_s`` and ``timeout_s + 2 * SWEEP_S`` after it began;
(b) or, while a read has been pending for more than ``timeout_s + 2 * SWEEP_S`` (one that (a) did
    not find: a request that came pipelined behind another, or in the same clock tick as the
    previous answer, looks answered to the kernel's times), it has neither received nor sent a
    byte for ``timeout_s``: the stalled connection, and any keep-alive connection idle that long
    (closed as the keep-alive timeout would close it; SageMaker's front end keeps an idle
    connection for 60 s at most).

(c) and, when the worker is out of threads (``threads``: a body read pending in all of them but
    one at most), whatever the timeout: the requests in progress that have received nothing for
    ``stall_s`` (1 s), the most silent first, no more of them than reads are pending less those
    cut before and not answered yet (looking every ``CROWDED_SWEEP_S`` meanwhile, as freed threads
    take the next ones). Each read holds its thread until its connection ends, so a handful of
    stalled clients on one worker (its 8 threads) would otherwise leave every other request to
    that worker, /ping included, waiting for the whole ``timeout_s``. A body that is still coming
    (a large one on a slow link) is not silent that long, and SageMaker's front end sends whole
    bodies. The limit and the order spare a whole request waiting for a thread: it came after the
    stalled ones that hold the threads, so it has been silent for less; and until those cut
    before have answered, their threads are not free to take it, so it is not cut in their place
    while the machine is slow to run them. Cut while it waits, it would be lost unanswered
    (tests/serve/test_server_bare.py, tests/bench/test_reliability.py's slow clients).

A connection is never touched while no body read is pending, and the scans cost nothing then.
The kernel's times have the resolution of its clock tick (1-10 ms); a kernel older than 4.6 has
no ``tcpi_data_segs_out``, and the watchdog then stays off with a warning.
"""
from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time

log = logging.getLogger(__name__)

SWEEP_S = 0.5
STALL_S = 1.0   # (c): silence that sheds a request while the worker is out of threads
# while out of threads: each sweep sheds at most one request per pending read, and the stalled
# requests queued behind those take the freed threads at once: sweep at the pace they come
CROWDED_SWEEP_S = 0.1
_TCP_ESTABLISHED = 1
# struct tcp_info (linux/tcp.h): tcpi_state, tcpi_last_data_sent, tcpi_last_data_recv (ms ago),
# tcpi_data_segs_in and tcpi_data_segs_out (data segments received and sent, Linux 4.6+)
_STATE, _LAST_SENT, _LAST_RECV, _SEGS_IN, _SEGS_OUT = 0, 44, 52, 152, 156
_INFO_BYTES = 160


class BodyDeadline:
    """Body reads in progress in one worker, and the watchdog that ends those past ``timeout_s``."""

    def __init__(self, timeout_s: float, threads: int | None = None, stall_s: float = STALL_S):
        self.timeout_s = float(timeout_s)
        self.threads, self.stall_s = threads, float(stall_s)   # (c); threads None: never out of threads
        self.reads: dict[int, float] = {}     # thread ident -> time.monotonic() the read began
        # time.monotonic() of the last sweep that cut by (a) or (b), and by (c): a read that came back
        # short after one of them began was cut by it (its own wait says nothing: its request may
        # have waited for a thread, silent all along, before the read began)
        self.last_cut = float("-inf")
        self.last_shed = float("-inf")
        self._seen: dict[int, tuple[float, int]] = {}   # socket inode -> (first seen in progress, segs out then)
        # inodes (c) cut: one cut while its request waited for a thread stays in progress and silent
        # until a thread reads it, and must not take the place of one that holds a thread
        self._shed: set[int] = set()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the watchdog (in the worker process, after the fork)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="serve-body-deadline", daemon=True)
            self._thread.start()

    def crowded(self) -> bool:
        """Whether a body read is pending in all of the worker's threads but one at most."""
        return self.threads is not None and len(self.reads) >= max(1, self.threads - 1)

    def _watch(self) -> None:
        while True:
            time.sleep(CROWDED_SWEEP_S if self.crowded() else SWEEP_S)
            if not self.reads:
                self._seen.clear()
                continue
            try:
                self.sweep(time.monotonic())
            except _NoTcpInfo as exc:
                log.warning("no deadline on request bodies in this worker: %s", exc)
                return
            except Exception:   # the watchdog must outlive any surprise from /proc
                log.exception("body deadline sweep failed")

    def sweep(self, now: float) -> int:
        """One look at this process's TCP connections; returns how many it cut off."""
        pending = len(self.reads)
        oldest = min(self.reads.values(), default=now)
        overdue = now - oldest > self.timeout_s + 2 * SWEEP_S
        crowded = self.crowded()
        frozen_ms, stalled_ms = self.timeout_s * 1000, self.stall_s * 1000
        cut, live, present, silent = 0, set(), set(), []   # silent: (ms since data came, fd, inode) for (c)
        for fd, inode in _socket_fds():
            present.add(inode)
            with _Socket(fd, inode) as sock:
                info = sock.tcp_info() if sock else None
                if info is None or info[_STATE] != _TCP_ESTABLISHED:
                    continue
                last_sent = struct.unpack_from("=I", info, _LAST_SENT)[0]   # ms ago
                last_recv = struct.unpack_from("=I", info, _LAST_RECV)[0]
                segs_in, segs_out = struct.unpack_from("=II", info, _SEGS_IN)
                if last_recv < last_sent or (segs_out == 0 and segs_in > 0):
                    # request bytes came after the last answer (or there was none yet): in progress
                    live.add(inode)
                    first = self._seen.get(inode)
                    if first is None or first[1] != segs_out:
                        self._seen[inode] = (now, segs_out)
                    elif now - first[0] >= self.timeout_s:
                        self.last_cut = now   # before the cut: the app's read returns after it
                        cut += sock.cut()
                        continue
                    if crowded and last_recv >= stalled_ms:
                        if inode not in self._shed:
                            silent.append((last_recv, fd, inode))
                        continue
                if overdue and min(last_sent, last_recv) >= frozen_ms:
                    self.last_cut = now
                    cut += sock.cut()
        # a connection cut before and not answered yet still stands for a pending read (or for one
        # that ends at once when a thread takes its request): only the reads beyond those may be
        # shed now, else a whole request queued behind them would be cut in their place while
        # their threads are still on their way to answering 408
        budget = pending - len(self._shed & live)
        if silent and budget > 0:
            self.last_shed = now   # before the cut: the app's read returns after it
            # the most silent first; between equals (the kernel's times tick in ms), the older
            # connection (the lower fd, as the kernel hands out the lowest free one)
            for _, fd, inode in sorted(silent, key=lambda c: (-c[0], c[1]))[:budget]:
                with _Socket(fd, inode) as sock:
                    if sock and sock.cut():
                        cut += 1
                        self._shed.add(inode)
        self._shed &= present
        for inode in [inode for inode in self._seen if inode not in live]:
            del self._seen[inode]
        return cut


class _NoTcpInfo(RuntimeError):
    """This kernel's TCP_INFO lacks what the watchdog reads."""


def _socket_fds():
    """(fd, socket inode) of this process's sockets."""
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:   # closed meanwhile
            continue
        if target.startswith("socket:["):
            yield int(name), int(target[8:-1])


class _Socket:
    """A duplicate of fd, if it is still the socket ``inode``: held while the watchdog looks at it,
    so that a connection closed and its fd reused meanwhile is never the one cut."""

    def __init__(self, fd: int, inode: int):
        self.fd, self.inode, self.dup = fd, inode, None

    def __enter__(self):
        try:
            self.dup = os.dup(self.fd)
            if os.fstat(self.dup).st_ino != self.inode:
                return None
        except OSError:
            return None
        return self

    def __exit__(self, *exc):
        if self.dup is not None:
            os.close(self.dup)

    def tcp_info(self) -> bytes | None:
        sock = socket.socket(fileno=self.dup)
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                return None
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _INFO_BYTES)
        except OSError:
            return None
        finally:
            sock.detach()
        if len(info) < _INFO_BYTES:
            raise _NoTcpInfo(f"TCP_INFO has {len(info)} bytes, fewer than {_INFO_BYTES} (Linux 4.6+)")
        return info

    def cut(self) -> int:
        sock = socket.socket(fileno=self.dup)
        try:
            sock.shutdown(socket.SHUT_RD)
            return 1
        except OSError:
            return 0
        finally:
            sock.detach()
