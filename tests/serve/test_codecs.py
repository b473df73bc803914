"""serve.codecs: every request format decodes to the same float32 rows, bad bodies are refused
with the right status and a message naming the row and column, responses encode as the
stock container's."""
import io
import json
import pickle

import numpy as np
import pytest

from serve import codecs
from serve.codecs import RequestError

ROWS = np.array([[2, 0, 0.0, 7.0, 3.0, 20.0, 2],
                 [1, np.nan, 0.25, np.nan, 3.5, -1e-3, 1e6]], dtype=np.float32)


def decode(content_type, body, num_feature=7):
    return codecs.decoder_for(content_type)(body, num_feature)


def refused(status, content_type, body, match, num_feature=7):
    with pytest.raises(RequestError, match=match) as info:
        decode(content_type, body, num_feature)
    assert info.value.status == status


# --- CSV ------------------------------------------------------------------------

def test_csv_one_row_fast_path():
    out = decode("text/csv", b"2,0,0.0,7.0,3.0,20.0,2")
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert np.array_equal(out, ROWS[:1])


def test_csv_reads_each_field_as_float_then_float32():
    """One row or many, the parser gives the bits of ``np.float32(float(field))`` for numbers in
    every notation, from subnormal to overflow, with empty and blank fields as missing values."""
    rng = np.random.default_rng(7)
    values = rng.standard_normal(3000) * 10.0 ** rng.integers(-45, 45, 3000)
    fields = [notation % v for v, notation in zip(values.tolist(), ["%r", "%.9g", "%.17g", "%e", " %.3f "] * 600)]
    fields[::50] = [""] * len(fields[::50])
    fields[25::50] = [" \t"] * len(fields[25::50])
    expected = np.array([np.float32(float(f)) if f.strip() else np.nan for f in fields], dtype=np.float32)
    out = decode("text/csv", ",".join(fields).encode(), len(fields))
    assert out.shape == (1, len(fields))
    assert np.array_equal(out[0].view(np.uint32), expected.view(np.uint32))
    lines = "\r\n".join(",".join(fields[i:i + 60]) for i in range(0, len(fields), 60))
    out = decode("text/csv", lines.encode(), 60)
    assert out.shape == (50, 60)
    assert np.array_equal(out.ravel().view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("body", [b"1,,0.25,,3.5,-0.001,1000000", b"1,nan,0.25,NaN,3.5,-1e-3,1e6\n",
                                  b"1, ,0.25,,3.5,-0.001,1e6\r\n", b"1,,0.25, nan ,3.5,-0.001,1e6"])
def test_csv_missing_values_in_one_row(body):
    assert np.array_equal(decode("text/csv", body), ROWS[1:], equal_nan=True)


@pytest.mark.parametrize("body", [b"1, ,2", b"1,\t,2", b"1,\x0b,2", b"1, ,2\n1,\t,2"])
def test_csv_blank_fields_are_missing_values(body):
    """np.fromstring would read a blank field as -1: it must be NaN."""
    out = decode("text/csv", body, 3)
    assert np.array_equal(out, np.tile(np.array([[1, np.nan, 2]], dtype=np.float32), (out.shape[0], 1)), equal_nan=True)


def test_csv_missing_values_at_the_edges():
    out = decode("text/csv", b",1,2\n3,4,\n,,\n")
    expected = np.array([[np.nan, 1, 2], [3, 4, np.nan], [np.nan] * 3], dtype=np.float32)
    assert np.array_equal(out, expected, equal_nan=True)
    assert np.array_equal(decode("text/csv", b",1,"), expected[[0]][:, [0, 1, 0]], equal_nan=True)


def test_csv_many_rows_with_crlf_and_parameters():
    body = b"2,0,0.0,7.0,3.0,20.0,2\r\n1,,0.25,,3.5,-0.001,1e6\r\n"
    assert np.array_equal(decode("text/csv; charset=utf-8", body), ROWS, equal_nan=True)
    assert np.array_equal(decode("Text/CSV;header=absent", body), ROWS, equal_nan=True)


def test_csv_label_size_drops_the_first_column():
    body = b"1,2,0,0.0,7.0,3.0,20.0,2\n0,1,,0.25,,3.5,-0.001,1e6"
    assert np.array_equal(decode("text/csv;label_size=1", body), ROWS, equal_nan=True)
    refused(415, "text/csv;label_size=3", body, "label_size")


def test_csv_large_body_matches_a_reference_parser(sample_model_dir):
    """The sample's rows (8.6 % missing) repeated to ~6 MB decode exactly as genfromtxt reads them."""
    text = (sample_model_dir("rtb-large") / "sample.csv").read_bytes()
    reference = np.genfromtxt(io.BytesIO(text), delimiter=",", dtype=np.float32)
    repeats = 6_000_000 // len(text)
    out = decode("text/csv", text * repeats)
    assert out.shape == (reference.shape[0] * repeats, 60)
    assert np.array_equal(out, np.tile(reference, (repeats, 1)), equal_nan=True)


@pytest.mark.parametrize("body, match", [
    (b"2,0,x,7", r"row 1, column 3: 'x' is not a number"),
    (b"2,0 1,7", r"row 1, column 2: '0 1' is not a number"),
    (b"2,0,1,7\n2,0 1,7,8", r"row 2, column 2: '0 1' is not a number"),
    (b"2,0,1,7\n1,2,3,4\n5,6,seven,8", r"row 3, column 3: 'seven' is not a number"),
    (b"1,2,3\n4,5\n6,7,8", r"row 2 has 2 values; row 1 has 3"),
    (b"1,2,3\n\n4,5,6", r"row 2 has 1 values; row 1 has 3"),
    (b"dow,hour\n1,2", r"row 1, column 1: 'dow' is not a number"),
    (b"1,2,\xff\xfe", r"not UTF-8"),
])
def test_csv_bad_values_name_the_row_and_column(body, match):
    refused(400, "text/csv", body, match)


@pytest.mark.parametrize("body", [b"", b"   \n\n"])
def test_empty_bodies_are_refused(body):
    for content_type in ("text/csv", "application/json", "application/jsonlines", "text/libsvm"):
        refused(400, content_type, body, "empty")


# --- JSON and JSON lines -----------------------------------------------------------------

@pytest.mark.parametrize("document", [
    [[2, 0, 0.0, 7.0, 3.0, 20.0, 2], [1, None, 0.25, None, 3.5, -0.001, 1e6]],
    {"instances": [[2, 0, 0.0, 7.0, 3.0, 20.0, 2], [1, None, 0.25, None, 3.5, -0.001, 1e6]]},
    {"instances": [{"features": [2, 0, 0.0, 7.0, 3.0, 20.0, 2]},
                   {"features": [1, None, 0.25, None, 3.5, -0.001, 1e6]}]},
])
def test_json_shapes_the_sdk_sends(document):
    assert np.array_equal(decode("application/json", json.dumps(document).encode()), ROWS, equal_nan=True)


def test_json_one_row():
    for document in ([2, 0, 0.0, 7.0, 3.0, 20.0, 2], {"features": [2, 0, 0.0, 7.0, 3.0, 20.0, 2]}):
        assert np.array_equal(decode("application/json", json.dumps(document).encode()), ROWS[:1])


def test_json_numbers_read_as_the_standard_library_reads_them():
    """Numbers in every notation give the bits of json.loads then float32, and what the fast
    parser refuses is still read: NaN and Infinity as json.dumps writes them, a UTF-8 byte-order
    mark, UTF-16, integers past float64's range (400), a lone surrogate in a key."""
    rng = np.random.default_rng(11)
    values = (rng.standard_normal(2000) * 10.0 ** rng.integers(-45, 45, 2000)).tolist()
    body = ("[" + ", ".join(notation % v for v, notation in zip(values, ["%r", "%.9g", "%.17g", "%e"] * 500))
            + ", 12345678901234567890123, -7]").encode()
    expected = np.array(json.loads(body), dtype=np.float32)
    assert np.array_equal(decode("application/json", body, 2002)[0].view(np.uint32), expected.view(np.uint32))
    for text in (json.dumps([1.5, float("nan"), float("inf"), -float("inf")]).encode(),   # NaN, Infinity
                 b"\xef\xbb\xbf[1.5, NaN, Infinity, -Infinity]",
                 "[1.5, NaN, Infinity, -Infinity]".encode("utf-16"),
                 b'{"features": [1.5, NaN, Infinity, -Infinity], "\\ud800": 0}'):
        assert np.array_equal(decode("application/json", text, 4),
                              np.array([[1.5, np.nan, np.inf, -np.inf]], dtype=np.float32), equal_nan=True), text
    refused(400, "application/json", b"[1" + b"0" * 400 + b"]", "too large for a number", 1)


def test_a_large_json_body_is_parsed_within_a_few_times_its_size():
    """orjson takes about 15x a body of numbers while parsing, json about 4x: large bodies (the 6 MB
    that SageMaker allows, two decoding at once per worker) must keep json's footprint."""
    import tracemalloc

    rng = np.random.default_rng(3)
    body = json.dumps(rng.standard_normal((5000, 60)).round(6).tolist()).encode()
    tracemalloc.start()
    try:
        rows = decode("application/json", body, 60)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows.shape == (5000, 60)
    assert peak < 8 * len(body), f"peak {peak / 1e6:.1f} MB for a {len(body) / 1e6:.1f} MB body"


@pytest.mark.parametrize("body, match", [
    (b"[1, 2,", "not valid JSON"),
    (b'{"rows": [[1]]}', '"instances" or "features"'),
    (b"[]", "no rows"),
    (b'[[1, 2], [3, "x"]]', r'row 2, column 2: \'"x"\' is not a number'),
    (b"[[1, 2], [3]]", "row 2 has 1 values; row 1 has 2"),
    (b'{"instances": [{"values": [1]}]}', "features"),
    (b"[[1, [2]]]", "row 1, column 2"),
])
def test_json_errors(body, match):
    refused(400, "application/json", body, match)


def test_jsonlines():
    body = b'[2, 0, 0.0, 7.0, 3.0, 20.0, 2]\n{"features": [1, null, 0.25, null, 3.5, -0.001, 1e6]}\n'
    assert np.array_equal(decode("application/jsonlines", body), ROWS, equal_nan=True)
    refused(400, "application/jsonlines", b"[1, 2]\n[3, oops]\n", "line 2 is not valid JSON")
    refused(400, "application/jsonlines", b"1\n2\n", "each JSON line")


# --- NumPy ------------------------------------------------------------------------------------

def npy_bytes(array, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def test_npy_float64_int_and_one_row():
    assert np.array_equal(decode("application/x-npy", npy_bytes(ROWS.astype(np.float64))), ROWS, equal_nan=True)
    assert np.array_equal(decode("application/x-npy", npy_bytes(np.array([2, 0, 0, 7, 3, 20, 2]))), ROWS[:1])


def test_npy_never_unpickles():
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled a request",))
    pickled = npy_bytes(np.array([Boom()], dtype=object), allow_pickle=True)
    refused(400, "application/x-npy", pickled, "must hold numbers.*object")
    refused(400, "application/x-npy", pickle.dumps([1, 2]), "not a readable .npy")
    refused(400, "application/x-npy", npy_bytes(np.array(["a", "b"])), "must hold numbers")
    refused(400, "application/x-npy", npy_bytes(np.zeros((2, 2, 2))), "1-D or 2-D")


# --- LIBSVM -------------------------------------------------------------------------------------

def test_libsvm_with_and_without_labels():
    body = b"1 0:2 2:0.0 3:7 4:3 5:20 6:2\n2:0.25 0:1 4:3.5 5:-0.001 6:1e6\n"
    out = decode("text/libsvm", body)
    expected = ROWS.copy()
    expected[0, 1] = np.nan   # absent index = missing
    assert np.array_equal(out, expected, equal_nan=True)
    assert np.array_equal(decode("text/x-libsvm", b"0\n1 3:1"), np.array(
        [[np.nan] * 7, [np.nan] * 3 + [1] + [np.nan] * 3], dtype=np.float32), equal_nan=True)


@pytest.mark.parametrize("body, match", [
    (b"1 0:2 9:1", r"row 1: feature index 9 is out of range"),
    (b"1 0:2\n1 1:x", r"row 2: '1:x' has a value that is not a number"),
    (b"1 0:2\n1 a:1", r"row 2: 'a:1' has an index"),
    (b"1 0:2\n1 99999999999999999999999:1", r"row 2: .* has an index"),
    (b"1 -1:2", r"feature index -1 is out of range"),
    (b"1 3:", r"row 1: '3:' has a value that is not a number"),
    (b"0:1 5 1:2", r"row 1: '5' is not an index:value pair"),
])
def test_libsvm_errors(body, match):
    refused(400, "text/libsvm", body, match)


def test_libsvm_index_base_is_the_servers_setting_not_a_guess_per_request():
    """The stock container guesses 1-based when a request's smallest index is at least 1, so
    "1:5" means feature 0 in one request and feature 1 in another holding a "0:" pair. Here the
    setting decides, for every request alike."""
    one_based = codecs.decoder_for("text/libsvm", libsvm_index_base=1)
    zero_based = codecs.decoder_for("text/libsvm")
    assert one_based is codecs.decode_libsvm_one_based and zero_based is codecs.decode_libsvm
    assert codecs.decoder_for("text/x-libsvm; charset=utf-8", 1) is codecs.decode_libsvm_one_based
    assert codecs.decoder_for("text/csv", 1) is codecs.decode_csv       # other types keep theirs
    body = b"1 1:2 3:0.0 4:7 5:3 6:20 7:2"
    expected = ROWS[:1].copy()
    expected[0, 1] = np.nan
    assert np.array_equal(one_based(body, 7), expected, equal_nan=True)
    # Without feature 1's "2:" pair the meaning is the same: nothing is guessed from the indices.
    assert np.array_equal(zero_based(b"1 1:5 3:1", 7)[0, [1, 3]], [5, 1])
    assert np.array_equal(zero_based(b"1 0:9 1:5", 7)[0, [0, 1]], [9, 5])
    assert np.array_equal(one_based(b"1 1:5 3:1", 7)[0, [0, 2]], [5, 1])


def test_libsvm_index_equal_to_feature_count_says_how_to_switch():
    with pytest.raises(RequestError, match=r"feature index 7 is out of range; the model has features "
                       r"0 to 6 \(0-based indices\)\. If your indices start at 1, start the server with "
                       r"SERVE_LIBSVM_INDEX_BASE=1 \(serve --libsvm-index-base 1\)") as info:
        decode("text/libsvm", b"1 1:2 7:1")
    assert info.value.status == 400
    # No hint where switching would not help: an index 0 present, or an index past the count.
    for body in (b"1 0:1 7:1", b"1 1:1 8:1"):
        with pytest.raises(RequestError, match=r"out of range; the model has features 0 to 6 \(0-based "
                                               r"indices\)$"):
            decode("text/libsvm", body)
    one_based = codecs.decoder_for("text/libsvm", 1)
    with pytest.raises(RequestError, match=r"feature index 0 is out of range; the model has features 1 to 7 "
                                           r"\(1-based indices\)\. If your indices start at 0, .*"
                                           r"SERVE_LIBSVM_INDEX_BASE=0"):
        one_based(b"1 0:1 3:1", 7)


# --- content types and Accept --------------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "", "text/plain", "application/x-recordio", "image/png"])
def test_unsupported_content_types_get_415(header):
    refused(415, header, b"1,2", "Content-Type")


@pytest.mark.parametrize("accept, expected", [
    (None, "text/csv"), ("*/*", "text/csv"), ("application/json", "application/json"),
    ("application/jsonlines", "application/jsonlines"), ("text/html, application/json;q=0.9", "application/json"),
    ("application/json;q=0.5, text/csv", "text/csv"), ("text/*", "text/csv"),
    ("image/png, */*;q=0.1", "text/csv"), ("APPLICATION/JSON", "application/json"),
])
def test_accept_negotiation(accept, expected):
    assert codecs.response_type(accept, "text/csv") == expected


def test_accept_default_can_be_json():
    assert codecs.response_type("*/*", "application/json") == "application/json"


@pytest.mark.parametrize("accept", ["text/html", "application/x-recordio-protobuf", "application/json;q=0"])
def test_unacceptable_accept_gets_406(accept):
    with pytest.raises(RequestError) as info:
        codecs.response_type(accept, "text/csv")
    assert info.value.status == 406


# --- responses --------------------------------------------------------------------------------------

SCORES = np.array([0.25753248, 0.1, 1e-7], dtype=np.float32)


def test_default_csv_is_one_line_and_one_value_per_line_in_batch():
    outputs = {"score": SCORES}
    assert codecs.encode_csv(outputs, selected=False, batch=False) == b"0.25753248,0.1,1e-07"
    assert codecs.encode_csv(outputs, selected=False, batch=True) == b"0.25753248\n0.1\n1e-07\n"


def test_numbers_read_back_to_the_same_float32():
    values = np.random.default_rng(1).random(1000).astype(np.float32)
    text = codecs.encode_csv({"score": values}, selected=False, batch=False).decode()
    assert np.array_equal(np.array(text.split(","), dtype=np.float32), values)


def test_selected_outputs_in_csv_json_and_jsonlines():
    outputs = {"predicted_label": np.array([1, 0]), "probability": np.array([0.75, 0.125], dtype=np.float32),
               "probabilities": np.array([[0.25, 0.75], [0.875, 0.125]], dtype=np.float32)}
    assert codecs.encode_csv(outputs, selected=True, batch=False) == (
        b'1,0.75,"[0.25, 0.75]"\n0,0.125,"[0.875, 0.125]"')
    document = json.loads(codecs.encode_json(outputs, selected=True, batch=False))
    assert document == {"predictions": [
        {"predicted_label": 1, "probability": 0.75, "probabilities": [0.25, 0.75]},
        {"predicted_label": 0, "probability": 0.125, "probabilities": [0.875, 0.125]}]}
    lines = codecs.encode_jsonlines(outputs, selected=True, batch=False).decode().splitlines()
    assert [json.loads(line) for line in lines] == document["predictions"]


def test_json_writes_nan_as_null():
    body = codecs.encode_json({"score": np.array([np.nan, 0.5], dtype=np.float32)}, selected=False, batch=False)
    assert json.loads(body) == {"predictions": [{"score": None}, {"score": 0.5}]}


@pytest.mark.parametrize("encode", [codecs.encode_csv, codecs.encode_json, codecs.encode_jsonlines])
@pytest.mark.parametrize("selected", [False, True])
def test_small_and_vectorised_response_paths_write_the_same_bytes(monkeypatch, encode, selected):
    rng = np.random.default_rng(3)
    probability = rng.random(40).astype(np.float32)
    probability[[3, 17]] = np.nan
    outputs = ({"predicted_label": (probability > 0.5).astype(np.int64), "probability": probability,
                "probabilities": np.column_stack((1 - probability, probability))} if selected
               else {"score": probability})
    monkeypatch.setattr(codecs, "SMALL_RESPONSE_ROWS", 1000)
    by_python = encode(outputs, selected=selected, batch=False)
    monkeypatch.setattr(codecs, "SMALL_RESPONSE_ROWS", 0)
    assert encode(outputs, selected=selected, batch=False) == by_python


def test_libsvm_expansion_is_bounded():
    refused(413, "text/libsvm", b"0 0:1" + b"\n0" * 3_000_000, "send fewer rows", num_feature=60)


# --- bodies the fuzzer (bench.fuzz) found answered 500; each is now a clear 400 -----------------

@pytest.mark.parametrize("content_type", ["application/json", "application/jsonlines"])
def test_json_nested_too_deeply_is_400(content_type):
    # json.loads raises RecursionError (not ValueError) past about 1,000 brackets.
    refused(400, content_type, b"[" * 100_000, "nested too deeply")
    refused(400, content_type, b"[" * 5_000 + b"1" + b"]" * 5_000, "nested too deeply")
    # orjson reads up to 1,024 levels: deeper than numpy's 64 dimensions and than json.dumps writes
    for depth in (100, 990, 1_024):
        refused(400, content_type, b"[" * depth + b"1" + b"]" * depth, "nested too deeply|is not a number")


def test_json_integer_beyond_any_float_is_400():
    # np.asarray raises OverflowError (not ValueError) for an int over 1.8e308.
    refused(400, "application/json", b"[[1, 2, 3, 4, 5, 6, 1" + b"0" * 400 + b"]]", "row 1, column 7: .* too large")
    refused(400, "application/json", b"[1, -1" + b"0" * 400 + b", 3, 4, 5, 6, 7]", "row 1, column 2")
    # below the float64 limit a big integer is an (infinite in float32) number, as 1e39 is
    assert np.isinf(decode("application/json", b"[1" + b"0" * 60 + b", 2, 3, 4, 5, 6, 7]")[0, 0])


@pytest.mark.parametrize("body", [b"1", b"1\n0\n", b"\x88"])
def test_libsvm_rows_of_labels_only(body):
    # np.strings.partition fails on an empty token array: a body without any index:value pair.
    if body == b"\x88":
        refused(400, "text/libsvm", body, "the label .* is not a number")
    else:
        out = decode("text/libsvm", body)
        assert out.shape == (body.count(b"\n") or 1, 7) and np.isnan(out).all()


def test_libsvm_label_must_be_a_number():
    refused(400, "text/libsvm", b"1 0:1\nyes 0:2", "row 2: the label 'yes' is not a number")


def npy_with_header(header: str, data: bytes = b"") -> bytes:
    text = header.encode("latin1")
    padding = 64 - (10 + len(text) + 1) % 64
    return b"\x93NUMPY\x01\x00" + (len(text) + padding + 1).to_bytes(2, "little") + text + b" " * padding + b"\n" + data


@pytest.mark.parametrize("header", [
    "{'descr': '\x08b1', 'fortran_order': False, 'shape': (1, 3\x10, }",     # TokenError in numpy's repair
    "{'descr': '|,1', 'fortran_order': False, 'shape': (1, 3), }",           # SyntaxError
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3),-1:2 }",      # TypeError sorting the keys
    "{'descr': [('a', '<f4', (1" + ",1" * 300 + "))], 'fortran_order': False, 'shape': (1,), }",
    "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((",
])
def test_npy_unreadable_headers_are_400(header):
    refused(400, "application/x-npy", npy_with_header(header, b"\0" * 12), "header is not readable")


@pytest.mark.parametrize("shape", ["(2, 3111111111111111111111111111111111111111111)", "(1000000000, 1000000000)",
                                   "(2, 7)", "(-1, 7)", "(1, -7)"])
def test_npy_shape_that_lies_about_the_data_is_400(shape):
    # The data is 1 x 7 float32: the shape must match it exactly; nothing is allocated for the claim.
    body = npy_with_header(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}", b"\0" * 28)
    refused(400, "application/x-npy", body, "shape|1-D or 2-D")


def test_npy_fortran_order_big_endian_and_structured():
    assert np.array_equal(decode("application/x-npy", npy_bytes(np.asfortranarray(ROWS))), ROWS, equal_nan=True)
    assert np.array_equal(decode("application/x-npy", npy_bytes(ROWS.astype(">f8"))), ROWS, equal_nan=True)
    refused(400, "application/x-npy", npy_bytes(np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")])), "must hold numbers")
    refused(400, "application/x-npy", npy_bytes(np.zeros((1, 7), dtype=np.complex64)), "must hold numbers")
    refused(400, "application/x-npy", npy_bytes(np.zeros((0, 7), dtype=np.float32)), "with rows")
