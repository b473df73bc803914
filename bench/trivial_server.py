"""A trivial HTTP/1.1 endpoint: the load generator's own ceiling, and a server of known delay for tests.

It answers every request with ``200`` (or ``--status``) and a 4-byte body, keeping connections alive, in
one process with an asyncio protocol (no WSGI, no framework): far cheaper per request
than any gunicorn app, so a load run against it shows how fast the generator itself can
go on this machine while sharing the CPUs with a server.

``--delay-ms D`` holds each response D ms without blocking others (a server with a fixed
service time and unbounded concurrency); ``--serial`` makes that delay block the whole
process (a server that handles one request at a time, so that requests queue).

Run: ``python -m bench.trivial_server --port 8081 [--delay-ms 5] [--serial]``.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from http import HTTPStatus



def canned_response(status: int) -> bytes:
    """The bytes of the one response this server sends: ``status`` and a 4-byte CSV body."""
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: text/csv\r\n"
            f"Content-Length: 4\r\nConnection: keep-alive\r\n\r\n0.5\n").encode()


BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
MAX_HEADER_BYTES = 64 * 1024


def _content_length(head: bytes) -> int:
    """The Content-Length of a request head (0 when absent); ValueError when malformed."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
            if length < 0:
                raise ValueError("negative Content-Length")
            return length
    return 0


class TrivialHTTP(asyncio.Protocol):
    """Reads requests (head + Content-Length body) and answers each with the canned response."""

    def __init__(self, delay_s: float, serial: bool, response: bytes):
        self.response = response
        self.delay_s = delay_s
        self.serial = serial
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    self._refuse()
                return
            try:
                length = _content_length(bytes(self.buffer[:end]))
            except ValueError:
                self._refuse()
                return
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            self._answer()

    def _answer(self):
        if self.delay_s <= 0:
            self.transport.write(self.response)
        elif self.serial:
            time.sleep(self.delay_s)      # blocks the loop on purpose: one request at a time
            self.transport.write(self.response)
        else:
            asyncio.get_running_loop().call_later(self.delay_s, self._write_later)

    def _write_later(self):
        if not self.transport.is_closing():
            self.transport.write(self.response)

    def _refuse(self):
        self.transport.write(BAD_REQUEST)
        self.transport.close()


async def serve(host: str, port: int, delay_ms: float, serial: bool, status: int = 200) -> None:
    loop = asyncio.get_running_loop()
    response = canned_response(status)
    server = await loop.create_server(lambda: TrivialHTTP(delay_ms / 1000, serial, response), host, port,
                                      backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trivial_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="service time per request")
    parser.add_argument("--serial", action="store_true", help="the delay blocks: one request at a time")
    parser.add_argument("--status", type=int, default=200, help="status of every answer (tests error counting)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.delay_ms, args.serial, args.status))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
