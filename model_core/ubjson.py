"""A small UBJSON decoder for what XGBoost writes (models and 1.x pickle snapshots).

Only decodes data: objects, arrays (including XGBoost's typed ``[$d#L`` arrays),
numbers, strings, booleans, null. Bounds every length and count by the bytes left and
limits nesting, so a hostile file fails with UBJSONError, never a hang or a huge
allocation. :func:`scan` walks a document without building it (the model check that
runs before XGBoost or Treelite parse the bytes).
"""
from __future__ import annotations

import struct

MAX_DEPTH = 64
_NUMBERS = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q", b"d": ">f", b"D": ">d"}


class UBJSONError(ValueError):
    """Not valid UBJSON (or nested beyond MAX_DEPTH)."""


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise UBJSONError(f"truncated at byte {self.pos} (wanted {n} more)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def marker(self) -> bytes:
        while True:
            m = bytes(self.take(1))
            if m != b"N":         # no-op padding
                return m

    def number(self, m: bytes):
        fmt = _NUMBERS[m]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def length(self) -> int:
        m = self.marker()
        if m not in (b"i", b"U", b"I", b"l", b"L"):
            raise UBJSONError(f"expected an integer length at byte {self.pos - 1}, got {m!r}")
        n = self.number(m)
        if n < 0:
            raise UBJSONError(f"negative length at byte {self.pos}")
        return n

    def string(self) -> str:
        try:
            return bytes(self.take(self.length())).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UBJSONError(f"invalid UTF-8 string before byte {self.pos}") from exc

    def value(self, m: bytes, depth: int):
        if depth > MAX_DEPTH:
            raise UBJSONError("nested too deeply")
        if m in _NUMBERS:
            return self.number(m)
        if m == b"S" or m == b"H":
            return self.string()
        if m == b"C":
            return bytes(self.take(1)).decode("latin-1")
        if m == b"T":
            return True
        if m == b"F":
            return False
        if m == b"Z":
            return None
        if m == b"[":
            return self.container(depth, is_object=False)
        if m == b"{":
            return self.container(depth, is_object=True)
        raise UBJSONError(f"unknown marker {m!r} at byte {self.pos - 1}")

    def peek(self) -> bytes:
        while bytes(self.data[self.pos:self.pos + 1]) == b"N":
            self.pos += 1
        return bytes(self.data[self.pos:self.pos + 1])

    def header(self) -> tuple[bytes | None, int | None]:
        """A container's optional ``$type`` and ``#count``."""
        kind, count = None, None
        if self.peek() == b"$":
            self.pos += 1
            kind = self.marker()
            if self.marker() != b"#":
                raise UBJSONError(f"typed container without a count at byte {self.pos - 1}")
            count = self.length()
        elif self.peek() == b"#":
            self.pos += 1
            count = self.length()
        if count is not None and count > len(self.data) - self.pos:
            # every element takes a byte at least, except typed null/true/false: XGBoost
            # never writes those, and a billion of them claimed in 10 bytes is an attack
            raise UBJSONError(f"container at byte {self.pos} claims {count} elements, more than the bytes left")
        return kind, count

    def container(self, depth: int, is_object: bool):
        kind, count = self.header()
        if count is not None and not is_object and kind in _NUMBERS:
            fmt = _NUMBERS[kind]       # XGBoost's typed arrays: one unpack
            raw = self.take(count * struct.calcsize(fmt))
            return list(struct.unpack(f">{count}{fmt[1]}", raw))
        end = b"}" if is_object else b"]"
        items: list | dict = {} if is_object else []
        while (len(items) < count) if count is not None else (self.peek() != end):
            key = self.string() if is_object else None
            item = self.value(kind or self.marker(), depth + 1)
            if is_object:
                items[key] = item
            else:
                items.append(item)
        if count is None:
            self.take(1)               # the closing bracket
        return items


def loads(data: bytes):
    """Decode one UBJSON value from ``data``; raises UBJSONError."""
    reader = _Reader(data)
    try:
        return reader.value(reader.marker(), 0)
    except (struct.error, KeyError) as exc:
        raise UBJSONError(f"invalid UBJSON: {exc}") from exc


def scan(data: bytes, keys: frozenset[str], max_depth: int = MAX_DEPTH) -> dict[str, list]:
    """Walks one UBJSON value without building it (typed arrays are skipped, not unpacked);
    returns the scalar values found under any of ``keys``. Raises UBJSONError as loads does."""
    reader = _Reader(data)
    found: dict[str, list] = {}

    def walk(m: bytes, depth: int, key: str | None) -> None:
        if depth > max_depth:
            raise UBJSONError("nested too deeply")
        if m not in (b"[", b"{"):
            value = reader.value(m, depth)      # a scalar: cheap
            if key in keys:
                found.setdefault(key, []).append(value)
            return
        is_object = m == b"{"
        kind, count = reader.header()
        if count is not None and not is_object and kind in _NUMBERS:
            reader.take(count * struct.calcsize(_NUMBERS[kind]))
            return
        end = b"}" if is_object else b"]"
        seen = 0
        while (seen < count) if count is not None else (reader.peek() != end):
            name = reader.string() if is_object else None
            walk(kind or reader.marker(), depth + 1, name)
            seen += 1
        if count is None:
            reader.take(1)

    try:
        walk(reader.marker(), 0, None)
    except (struct.error, KeyError) as exc:
        raise UBJSONError(f"invalid UBJSON: {exc}") from exc
    return found
