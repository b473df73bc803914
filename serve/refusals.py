"""Refusing a request: the error every decoder raises, and the bounds a body may expand to.

Its own module so that the decoders of ``serve.codecs`` and ``serve.recordio`` share them
without importing each other.
"""
from __future__ import annotations

# Sparse rows (LIBSVM, sparse RecordIO-protobuf) expand to dense ones: a 6 MB body of empty
# rows would otherwise become gigabytes. 16 M float32 values (64 MB) is far beyond any real request.
MAX_SPARSE_CELLS = 16 * 1024 * 1024


class RequestError(Exception):
    """A request the server refuses; ``status`` is the HTTP code, the message is for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
