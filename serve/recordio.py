"""``application/x-recordio-protobuf`` request bodies: SageMaker's ``Record`` messages in RecordIO.

This is what the SageMaker SDK's ``RecordSerializer`` sends (``write_numpy_to_dense_tensor``,
``write_spmatrix_to_sparse_tensor``) and what the stock XGBoost container accepts: one
record per row, framed as RecordIO (``0xced7230a``, a 32-bit length, the payload, zero
padding to 4 bytes), each a protobuf ``Record`` whose ``features["values"]`` is a
``Float32Tensor`` (also ``Float64Tensor``, which the SDK writes for a float64 array, and
``Int32Tensor``): ``values`` alone for a dense row; ``values``, ``keys``
(column indices) and ``shape`` (``[columns]``) for a sparse one, whose absent columns
are missing values, as XGBoost reads a sparse matrix.

Why a wire reader of its own rather than the ``protobuf`` package: the schema is six
small messages and fixed; reading it takes a page of code with every length checked
against the bytes that are there (nothing is allocated for a length the body does not
hold), where ``protobuf`` would be a new dependency with a C extension of its own on the
hot path, plus generated code, and would still leave the per-record Python loop. The
common body (every record the same dense layout, as the SDK writes a matrix) is read
without any loop: the records are viewed as one byte matrix, checked equal to the
first record outside its values, and the values read in place.

Labels, ``uid``, ``metadata`` and ``configuration`` are skipped, as the stock container
skips them at inference.
"""
from __future__ import annotations

import numpy as np

from serve.refusals import MAX_SPARSE_CELLS, RequestError

MAGIC = 0xCED7230A
_MAGIC_BYTES = MAGIC.to_bytes(4, "little")
_LENGTH_MASK = (1 << 29) - 1        # the top 3 bits are the multi-part flag, which the SDK never sets
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_TENSOR_DTYPES = {2: np.dtype("<f4"), 3: np.dtype("<f8"), 7: None}   # Value field -> packed dtype (None: varints)
FEATURES_KEY = b"values"


class _Row:
    """One record's tensor: values (float32), keys and shape (None when absent), and where its
    one packed run of ``itemsize``-byte values lies in the body (None: not one packed run)."""
    __slots__ = ("values", "keys", "shape", "span", "itemsize")

    def __init__(self, values, keys, shape, span, itemsize):
        self.values, self.keys, self.shape, self.span, self.itemsize = values, keys, shape, span, itemsize


def decode_recordio_protobuf(body: bytes, num_feature: int) -> np.ndarray:
    """float32 rows from a RecordIO-protobuf body (see the module's docstring)."""
    if not body:
        raise RequestError(400, "the request body is empty")
    records = _records(body)
    if len(records) * num_feature > MAX_SPARSE_CELLS:   # before reading any record: rows x features is the output
        raise RequestError(413, f"the body holds {len(records)} records of {num_feature} features, more than "
                                f"{MAX_SPARSE_CELLS} values; send fewer rows per request")
    first = _read_record(body, *records[0], 1)
    fast = _uniform_dense(body, records, first)
    if fast is not None:
        return fast
    rows = [first] + [_read_record(body, start, end, number)
                      for number, (start, end) in enumerate(records[1:], start=2)]
    return _assemble(rows, num_feature)


def _records(body: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record's payload; 400 for a broken frame."""
    out = []
    at, size = 0, len(body)
    while at < size:
        if size - at < 8 or body[at:at + 4] != _MAGIC_BYTES:
            raise RequestError(400, f"record {len(out) + 1}: not a RecordIO frame at byte {at} "
                                    "(expected the magic number 0xced7230a)")
        word = int.from_bytes(body[at + 4:at + 8], "little")
        length = word & _LENGTH_MASK
        if word >> 29:
            raise RequestError(400, f"record {len(out) + 1}: multi-part RecordIO records are not supported")
        start = at + 8
        if start + length > size:
            raise RequestError(400, f"record {len(out) + 1}: its length ({length} bytes) runs past the body's end")
        out.append((start, start + length))
        at = start + ((length + 3) & ~3)
    return out


def _varint(body: bytes, at: int, end: int, where: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if at >= end or shift > 63:
            raise RequestError(400, f"{where}: a malformed protobuf number")
        byte = body[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, at
        shift += 7


def _fields(body: bytes, at: int, end: int, where: str):
    """(field number, wire type, value or (start, end) for LEN) of a message; unknown
    fields are yielded too, for the caller to skip."""
    while at < end:
        key, at = _varint(body, at, end, where)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, at = _varint(body, at, end, where)
        elif wire == _LEN:
            length, at = _varint(body, at, end, where)
            if at + length > end:
                raise RequestError(400, f"{where}: a field's length runs past the end of its message")
            value, at = (at, at + length), at + length
        elif wire in (_FIXED64, _FIXED32):
            width = 8 if wire == _FIXED64 else 4
            if at + width > end:
                raise RequestError(400, f"{where}: a field runs past the end of its message")
            value, at = (at, at + width), at + width
        else:
            raise RequestError(400, f"{where}: protobuf wire type {wire} is not used by Record messages")
        yield number, wire, value


def _read_record(body: bytes, start: int, end: int, number: int) -> _Row:
    where = f"record {number}"
    tensor = None
    for field, wire, value in _fields(body, start, end, where):
        if field != 1 or wire != _LEN:   # 1: features; label, uid, metadata, configuration are skipped
            continue
        key, entry_value = None, None
        for entry_field, entry_wire, item in _fields(body, *value, where):
            if entry_field == 1 and entry_wire == _LEN:
                key = body[item[0]:item[1]]
            elif entry_field == 2 and entry_wire == _LEN:
                entry_value = item
        if key == FEATURES_KEY and entry_value is not None:
            tensor = entry_value
    if tensor is None:
        raise RequestError(400, f"{where}: no features[\"values\"] tensor")
    for field, wire, value in _fields(body, *tensor, where):
        if field in _TENSOR_DTYPES and wire == _LEN:
            return _read_tensor(body, *value, _TENSOR_DTYPES[field], where)
        if wire == _LEN:
            raise RequestError(400, f"{where}: features[\"values\"] must be a Float32Tensor, Float64Tensor "
                                    "or Int32Tensor")
    raise RequestError(400, f"{where}: features[\"values\"] holds no tensor")


def _read_tensor(body: bytes, start: int, end: int, dtype: np.dtype | None, where: str) -> _Row:
    values, keys, shape, span = [], [], [], None
    for field, wire, value in _fields(body, start, end, where):
        if field == 1:
            if dtype is None:   # Int32Tensor: varints, packed or one per field
                values += _packed_varints(body, value, wire, where, signed32=True)
            elif wire == _LEN:
                if (value[1] - value[0]) % dtype.itemsize:
                    raise RequestError(400, f"{where}: packed values of {value[1] - value[0]} bytes are not "
                                            f"whole {dtype.itemsize}-byte numbers")
                values.append(np.frombuffer(body, dtype, (value[1] - value[0]) // dtype.itemsize, value[0]))
                span = value if span is None else (-1, -1)   # more than one run: not the fast layout
            elif wire == (_FIXED32 if dtype.itemsize == 4 else _FIXED64):
                values.append(np.frombuffer(body, dtype, 1, value[0]))
                span = (-1, -1)
            else:
                raise RequestError(400, f"{where}: tensor values of the wrong protobuf type")
        elif field == 2:
            keys += _packed_varints(body, value, wire, where)
        elif field == 3:
            shape += _packed_varints(body, value, wire, where)
    if dtype is None:
        array = np.array(values, dtype=np.float32)
    else:
        array = np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32)
    return _Row(array, keys or None, shape or None, span if span != (-1, -1) else None,
                dtype.itemsize if dtype is not None else 0)


def _packed_varints(body: bytes, value, wire: int, where: str, signed32: bool = False) -> list[int]:
    if wire == _VARINT:
        numbers = [value]
    elif wire == _LEN:
        numbers, at, end = [], value[0], value[1]
        while at < end:
            number, at = _varint(body, at, end, where)
            numbers.append(number)
    else:
        raise RequestError(400, f"{where}: tensor keys or shape of the wrong protobuf type")
    if signed32:   # int32 is written as a 64-bit two's complement varint when negative
        numbers = [n - (1 << 64) if n >= 1 << 63 else n for n in numbers]
        if any(not -(1 << 31) <= n < 1 << 31 for n in numbers):
            raise RequestError(400, f"{where}: an Int32Tensor value out of the int32 range")
    return numbers


def _uniform_dense(body: bytes, records: list[tuple[int, int]], first: _Row) -> np.ndarray | None:
    """All rows at once when every record is the first one's dense layout, else None."""
    if first.keys is not None or first.shape is not None or first.span is None:
        return None
    stride = 8 + ((records[0][1] - records[0][0] + 3) & ~3)
    if len(body) != stride * len(records) or len(records) == 1:
        return None if len(records) > 1 else first.values.reshape(1, -1)
    start, end = first.span[0] - records[0][0] + 8, first.span[1] - records[0][0] + 8
    frames = np.frombuffer(body, np.uint8).reshape(len(records), stride)
    if not ((frames[:, :start] == frames[0, :start]).all() and (frames[:, end:] == frames[0, end:]).all()):
        return None
    values = np.ascontiguousarray(frames[:, start:end]).view("<f4" if first.itemsize == 4 else "<f8")
    return np.ascontiguousarray(values, dtype=np.float32)


def _assemble(rows: list[_Row], num_feature: int) -> np.ndarray:
    sparse = [row for row in rows if row.keys is not None or row.shape is not None]
    if not sparse:
        width = len(rows[0].values)
        for number, row in enumerate(rows, start=1):
            if len(row.values) != width:
                raise RequestError(400, f"record {number} has {len(row.values)} values; record 1 has {width}")
        return np.stack([row.values for row in rows]) if width else np.zeros((len(rows), 0), np.float32)
    width = None
    for number, row in enumerate(rows, start=1):
        row_width = (row.shape[0] if row.shape else num_feature) if row.keys is not None or row.shape else len(row.values)
        if row.shape is not None and len(row.shape) != 1:
            raise RequestError(400, f"record {number}: a sparse row's shape must be [columns]; it is {row.shape}")
        if width is None:
            width = row_width
        elif row_width != width:
            raise RequestError(400, f"record {number} has {row_width} columns; record 1 has {width}")
    if len(rows) * width > MAX_SPARSE_CELLS:
        raise RequestError(413, f"the sparse body expands to {len(rows)} rows of {width} columns, more than "
                                f"{MAX_SPARSE_CELLS} values; send fewer rows per request")
    out = np.full((len(rows), width), np.nan, dtype=np.float32)
    for number, row in enumerate(rows, start=1):
        if row.keys is None and row.shape is None:
            out[number - 1] = row.values
            continue
        keys = row.keys or []
        if len(keys) != len(row.values):
            raise RequestError(400, f"record {number}: {len(keys)} keys for {len(row.values)} values")
        if keys:
            indices = np.array(keys, dtype=np.uint64)
            if int(indices.max()) >= width:
                raise RequestError(400, f"record {number}: key {int(indices.max())} is out of range; "
                                        f"the row has {width} columns")
            out[number - 1, indices.astype(np.int64)] = row.values
    return out


# --- writing (for tests, fixtures and the fuzzer; the server only reads) ------------------------

def _varint_bytes(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint_bytes(number << 3 | _LEN) + _varint_bytes(len(payload)) + payload


def _frame(payload: bytes) -> bytes:
    return _MAGIC_BYTES + len(payload).to_bytes(4, "little") + payload + b"\0" * (-len(payload) % 4)


def _record(tensor: bytes) -> bytes:
    value = _field(2, tensor)                                   # Value.float32_tensor
    return _field(1, _field(1, FEATURES_KEY) + _field(2, value))  # Record.features["values"]


def encode_dense(rows: np.ndarray) -> bytes:
    """Rows as the SDK's ``write_numpy_to_dense_tensor`` writes a float32 matrix."""
    rows = np.asarray(rows, dtype="<f4").reshape(len(rows), -1)
    return b"".join(_frame(_record(_field(1, row.tobytes()) if row.size else b"")) for row in rows)


def encode_sparse(rows: np.ndarray) -> bytes:
    """Rows as the SDK's ``write_spmatrix_to_sparse_tensor`` writes them: the non-NaN
    values, their column indices, and the shape [columns]."""
    rows = np.asarray(rows, dtype="<f4").reshape(len(rows), -1)
    out = []
    for row in rows:
        present = np.flatnonzero(~np.isnan(row))
        tensor = (_field(1, row[present].tobytes()) if present.size else b"") \
            + (_field(2, b"".join(_varint_bytes(int(i)) for i in present)) if present.size else b"") \
            + _field(3, _varint_bytes(row.size))
        out.append(_frame(_record(tensor)))
    return b"".join(out)
