"""serve.body_deadline's rules on real loopback TCP connections of this process: the kernel's
TCP_INFO says which connection has a request in progress, and the watchdog shuts its reading side.
(The whole path, granian's WSGI interface answering 408, is tests/serve/test_server_bare.py's.)"""
import os
import socket
import time

import pytest

from serve.body_deadline import BodyDeadline, _Socket

REQUEST_START = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n1,2"


@pytest.fixture
def connection():
    """(client, server side) of a fresh loopback connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    yield client, server
    client.close()
    server.close()


def _read_side_shut(sock: socket.socket) -> bool:
    """Whether reading ``sock`` ends at once (its reading side shut) rather than waiting for data."""
    sock.settimeout(0.5)
    try:
        while sock.recv(4096):   # what had come before the shutdown, then the end
            pass
        return True
    except socket.timeout:
        return False


def test_a_request_with_nothing_sent_back_is_cut_at_the_timeout(connection):
    client, server = connection
    client.sendall(REQUEST_START)
    time.sleep(0.05)
    deadline = BodyDeadline(timeout_s=2.0)
    now = time.monotonic()
    deadline.reads[1] = now   # a body read pending (its thread's ident -> start)
    assert deadline.sweep(now) == 0            # first seen in progress
    assert deadline.sweep(now + 1.9) == 0      # not yet
    assert deadline.last_cut == float("-inf")
    assert deadline.sweep(now + 2.0) >= 1      # the timeout since it was first seen
    assert _read_side_shut(server)
    assert deadline.last_cut == now + 2.0 and deadline.last_shed == float("-inf")   # what the app's 408 reads


def test_a_trickled_body_is_cut_though_bytes_keep_coming(connection):
    client, server = connection
    client.sendall(REQUEST_START)
    deadline = BodyDeadline(timeout_s=0.6)
    deadline.reads[1] = started = time.monotonic()
    cut = 0
    while not cut and time.monotonic() - started < 3:
        time.sleep(0.1)
        client.sendall(b"1")
        cut = deadline.sweep(time.monotonic())
    assert cut and 0.6 <= time.monotonic() - started < 1.5
    assert _read_side_shut(server)


def test_an_answered_request_and_an_idle_connection_are_left_alone(connection):
    client, server = connection
    client.sendall(b"POST /invocations HTTP/1.1\r\nContent-Length: 1\r\n\r\n1")
    time.sleep(0.05)
    server.recv(4096)
    server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")   # answered: idle keep-alive now
    deadline = BodyDeadline(timeout_s=5.0)
    now = time.monotonic()
    deadline.reads[1] = now   # another thread's read
    for later in (0, 2, 6, 10):   # the last two: that read late, but this connection idle far less than 5 s
        deadline.sweep(now + later)
    assert not _read_side_shut(server)


def test_a_request_that_looks_answered_is_cut_once_a_read_is_late(connection):
    """A request pipelined behind another came before the other's answer: the kernel's times say
    answered. Once a read is late (past the timeout and two sweeps), a connection with no byte
    either way for the timeout is cut."""
    client, server = connection
    client.sendall(b"POST /invocations HTTP/1.1\r\nContent-Length: 1\r\n\r\n1" + REQUEST_START)
    time.sleep(0.05)
    server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
    deadline = BodyDeadline(timeout_s=0.3)
    deadline.reads[1] = time.monotonic()
    time.sleep(0.4)   # frozen for the timeout, but the read is not yet late
    deadline.sweep(time.monotonic())
    assert not _read_side_shut(server)
    deadline.reads[1] = time.monotonic() - 0.3 - 1.1   # late: past the timeout and two sweeps
    assert deadline.sweep(now := time.monotonic()) >= 1
    assert _read_side_shut(server) and deadline.last_cut == now


def test_a_reused_descriptor_is_never_the_one_cut(connection):
    _, server = connection
    inode = os.fstat(server.fileno()).st_ino
    with _Socket(server.fileno(), inode + 1) as sock:   # the fd now names another socket
        assert sock is None
    with _Socket(server.fileno(), inode) as sock:
        assert sock is not None and sock.tcp_info() is not None


def _connected_pair(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    return client, server


def test_out_of_threads_the_most_silent_requests_are_shed_before_the_timeout():
    """(c): with a read pending in every thread but one, requests silent for stall_s are cut long
    before the timeout, the most silent first and no more of them than reads are pending (the
    newer one stands for a whole request waiting for a thread: cut, it would be lost), each once,
    and the next one only once the one cut before has been answered."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        older, newer = _connected_pair(listener), _connected_pair(listener)
        try:
            older[0].sendall(REQUEST_START)
            time.sleep(0.3)
            newer[0].sendall(REQUEST_START)
            time.sleep(0.25)   # silent: the older 0.55 s, the newer 0.25 s
            deadline = BodyDeadline(timeout_s=60.0, threads=2, stall_s=0.2)
            now = time.monotonic()
            deadline.reads[1] = now - 0.5   # one read pending: all but one of 2 threads
            assert deadline.sweep(now) == 1 and deadline.last_shed == now
            assert _read_side_shut(older[1]) and not _read_side_shut(newer[1])
            # the read is still pending: the older one, cut, not answered yet (a machine slow to run
            # its thread) still holds it, so the newer one may be the whole request waiting for it
            for _ in range(3):
                assert deadline.sweep(time.monotonic()) == 0 and deadline.last_shed == now
            assert not _read_side_shut(newer[1])
            # the older one answered (408) and closed; the read pending now is the newer one's
            older[1].sendall(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
            older[1].close()
            assert deadline.sweep(time.monotonic()) == 1 and _read_side_shut(newer[1])
            assert deadline.sweep(time.monotonic()) == 0   # cut, not answered yet: not cut again
        finally:
            for sock in (*older, *newer):
                sock.close()


def test_with_threads_to_spare_or_data_still_coming_nothing_is_shed(connection):
    client, server = connection
    client.sendall(REQUEST_START)
    time.sleep(0.3)
    spare = BodyDeadline(timeout_s=60.0, threads=8, stall_s=0.2)   # one read pending of 8 threads
    spare.reads[1] = time.monotonic()
    assert spare.sweep(time.monotonic()) == 0 and spare.last_shed == float("-inf")
    crowded = BodyDeadline(timeout_s=60.0, threads=1, stall_s=0.5)
    crowded.reads[1] = started = time.monotonic()
    while time.monotonic() - started < 1.5:   # a body still coming, a byte every 0.1 s
        client.sendall(b"1")
        time.sleep(0.1)
        assert crowded.sweep(time.monotonic()) == 0
    assert not _read_side_shut(server)
