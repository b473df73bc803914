"""serve.recordio: bodies written by the SageMaker SDK 2.x's own encoder decode to the rows
it was given; broken frames and messages are 400s that say what is wrong; sparse bodies
are bounded like LIBSVM ones."""
from pathlib import Path

import numpy as np
import pytest

from serve import codecs
from serve.recordio import MAGIC, decode_recordio_protobuf, encode_dense, encode_sparse
from serve.refusals import MAX_SPARSE_CELLS, RequestError

FIXTURES = Path(__file__).parent / "fixtures" / "recordio"
EXPECTED = np.load(FIXTURES / "expected.npz")


def refused(status, body, match, num_feature=7):
    with pytest.raises(RequestError, match=match) as info:
        decode_recordio_protobuf(body, num_feature)
    assert info.value.status == status


@pytest.mark.parametrize("name", sorted(EXPECTED.files))
def test_sdk_written_bodies(name):
    # Written by sagemaker 2.x write_numpy_to_dense_tensor / write_spmatrix_to_sparse_tensor
    # (fixtures/recordio/make_fixtures.py); the sparse rows' absent columns are missing.
    decode = codecs.decoder_for("application/x-recordio-protobuf")
    rows = decode((FIXTURES / f"{name}.rec").read_bytes(), 7)
    assert rows.dtype == np.float32 and rows.flags.c_contiguous
    assert np.array_equal(rows, EXPECTED[name], equal_nan=True)


def test_the_test_encoder_writes_what_the_sdk_writes():
    assert encode_dense(EXPECTED["dense_float32"]) == (FIXTURES / "dense_float32.rec").read_bytes()
    assert encode_sparse(EXPECTED["sparse_float32"]) == (FIXTURES / "sparse_float32.rec").read_bytes()


def test_uniform_and_mixed_bodies_read_the_same():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(20_000, 7)).astype(np.float32)
    uniform = encode_dense(rows)                       # the vectorised path
    mixed = encode_sparse(rows[:1]) + encode_dense(rows[1:])   # one sparse record: record by record
    assert np.array_equal(decode_recordio_protobuf(uniform, 7), rows)
    assert np.array_equal(decode_recordio_protobuf(mixed, 7), rows)


def frame(payload: bytes, flags: int = 0) -> bytes:
    return MAGIC.to_bytes(4, "little") + (len(payload) | flags << 29).to_bytes(4, "little") + payload \
        + b"\0" * (-len(payload) % 4)


ONE_ROW = encode_dense(np.arange(7, dtype=np.float32).reshape(1, 7))


@pytest.mark.parametrize("body, match", [
    (b"\x0a\x23\xd7\xce", "not a RecordIO frame"),
    (b"junk" + ONE_ROW, "record 1: not a RecordIO frame"),
    (ONE_ROW + b"\x0a\x23\xd7\xce\xff\x00\x00\x00", "record 2: its length .* runs past"),
    (ONE_ROW[:-4], "runs past"),
    (frame(ONE_ROW[8:], flags=1), "multi-part"),
    (frame(b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"), "malformed protobuf number"),
    (frame(b"\x0a\x80"), "malformed protobuf number"),
    (frame(b"\x0b"), "wire type 3"),
    (frame(b"\x1a\x03abc"), "no features"),
    (frame(b"\x0a\x0b\x0a\x05other\x12\x02\x12\x00"), "no features"),
    (frame(b"\x0a\x0c\x0a\x06values\x12\x02\x4a\x00"), "must be a Float32Tensor"),
    (frame(b"\x0a\x0d\x0a\x06values\x12\x03\x12\x01\x0a"), "malformed protobuf number"),
    (frame(b"\x0a\x0d\x0a\x06values\x12\x03\x12\x05\x0a"), "runs past the end"),
    (frame(b"\x0a\x10\x0a\x06values\x12\x06\x12\x04\x0a\x02\x00\x00"), "not whole 4-byte numbers"),
])
def test_broken_bodies_are_400(body, match):
    refused(400, body, match)


def test_rows_must_agree():
    refused(400, encode_dense(np.ones((1, 7))) + encode_dense(np.ones((1, 6))), "record 2 has 6 values; record 1 has 7")
    sparse = encode_sparse(np.ones((1, 7)))
    refused(400, sparse + encode_sparse(np.ones((1, 9))), "record 2 has 9 columns")


def test_sparse_keys_are_checked():
    # keys [9] for a row of shape [7]: out of range; two keys for one value: a mismatch.
    tensor = b"\x0a\x04" + np.float32(1).tobytes() + b"\x12\x01\x09" + b"\x1a\x01\x07"
    record = b"\x0a" + bytes([len(tensor) + 12]) + b"\x0a\x06values\x12" + bytes([len(tensor) + 2]) + b"\x12" \
        + bytes([len(tensor)]) + tensor
    refused(400, frame(record), "key 9 is out of range")
    two_keys = tensor.replace(b"\x12\x01\x09", b"\x12\x02\x01\x02")
    record = b"\x0a" + bytes([len(two_keys) + 12]) + b"\x0a\x06values\x12" + bytes([len(two_keys) + 2]) + b"\x12" \
        + bytes([len(two_keys)]) + two_keys
    refused(400, frame(record), "2 keys for 1 values")


def test_sparse_expansion_is_bounded():
    # shape [2**40] per row: refused before anything of that size is allocated.
    tensor = b"\x1a\x06" + bytes([0x80, 0x80, 0x80, 0x80, 0x80, 0x20])
    record = b"\x0a" + bytes([len(tensor) + 12]) + b"\x0a\x06values\x12" + bytes([len(tensor) + 2]) + b"\x12" \
        + bytes([len(tensor)]) + tensor
    refused(413, frame(record) * 3, "more than")
    rows = MAX_SPARSE_CELLS // 1000 + 1   # counted from the frames, before any record is read
    refused(413, encode_sparse(np.full((1, 1000), np.nan)) * rows, "send fewer rows", num_feature=1000)
