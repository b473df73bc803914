"""Wire formats of ``/invocations``: request bodies to float32 rows, outputs to response bodies.

Decoders take the raw body and return a C-contiguous float32 matrix (rows x
columns, NaN = missing). They are on the hot path: CSV bodies are parsed by
fastnumbers (fast_float in C++, about 50 ns a field), JSON bodies by orjson (Rust);
a careful Python parser runs only to name the row and column of a CSV body the
fast parser refused (or to read oddities such as non-ASCII blanks), the standard
library's json for what orjson refuses. Each number gives the float32 bits of
``float()`` (or ``json.loads``) then float32.

Encoders take the selected outputs ({name: per-row values}, see
``serve.outputs``) and return the response body; numbers are written in the
shortest form that reads back to the same float32.
"""
from __future__ import annotations

import io
import json
import warnings
from typing import Callable, Union

import numpy as np
import orjson
from fastnumbers import try_array
from werkzeug.http import parse_options_header

from serve.recordio import decode_recordio_protobuf
from serve.refusals import MAX_SPARSE_CELLS, RequestError  # noqa: F401 - RequestError is this module's API too

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
NPY = "application/x-npy"
LIBSVM = "text/libsvm"
RECORDIO_PROTOBUF = "application/x-recordio-protobuf"

# A malformed .npy header makes numpy's header reader warn (Python-2 header repair, and the
# SyntaxWarnings of evaluating the sender's text); the request is answered 400 anyway.
warnings.filterwarnings("ignore", message="Reading `.npy` or `.npz` file required additional header parsing",
                        category=UserWarning)
warnings.filterwarnings("ignore", category=SyntaxWarning, module="<unknown>")

_SHOWN_CHARS = 40


def _shown(value: str | bytes) -> str:
    """A field as it may appear in an error message: quoted and cut short."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return repr(value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "...")


# --- request content types --------------------------------------------------

def parse_content_type(header: str | None) -> tuple[str, dict[str, str]]:
    """``Content-Type`` header -> (media type in lower case, parameters)."""
    if not header:
        raise RequestError(415, f"a Content-Type header is required; supported: {', '.join(DECODERS)}")
    media_type, params = parse_options_header(header)
    return media_type.lower(), params


def decoder_for(header: str | None, libsvm_index_base: int = 0) -> Callable[[bytes, int], np.ndarray]:
    """The decoder for a ``Content-Type`` header: a function (body, num_feature) -> float32 rows.
    ``libsvm_index_base``: where LIBSVM indices start (the server's setting, never the request's).
    Raises RequestError 415 for a missing or unsupported type."""
    decoder = _DECODER_BY_HEADER.get(header)   # the common headers, without parsing
    if decoder is not None:
        return decode_libsvm_one_based if libsvm_index_base and decoder is decode_libsvm else decoder
    media_type, params = parse_content_type(header)
    if media_type not in DECODERS:
        raise RequestError(415, f"Content-Type {_shown(media_type)} is not supported; "
                                f"supported: {', '.join(DECODERS)}")
    if media_type == CSV:
        label_size = params.get("label_size", "0")
        if label_size not in ("0", "1"):
            raise RequestError(415, f"text/csv label_size={_shown(label_size)} is not supported; use 0 or 1")
        return decode_csv_with_label if label_size == "1" else decode_csv
    decoder = DECODERS[media_type]
    return decode_libsvm_one_based if libsvm_index_base and decoder is decode_libsvm else decoder


# --- CSV ----------------------------------------------------------------------

def decode_csv(body: bytes, num_feature: int = 0) -> np.ndarray:
    """CSV without a header, one row per line; an empty field or ``nan`` is a missing value."""
    text = body.strip()
    if not text:
        raise RequestError(400, "the request body is empty")
    if b"\r" in text:
        text = text.replace(b"\r\n", b"\n")
    rows = _fast_csv(text)
    return rows if rows is not None else _careful_csv(text)   # names the row and column, or reads oddities


def decode_csv_with_label(body: bytes, num_feature: int = 0) -> np.ndarray:
    """CSV whose first column is a label (``text/csv;label_size=1``): the label is dropped."""
    rows = decode_csv(body, num_feature)
    if rows.shape[1] < 2:
        raise RequestError(400, "label_size=1 needs at least one feature after the label column")
    return np.ascontiguousarray(rows[:, 1:])


def _fast_csv(text: bytes) -> np.ndarray | None:
    """CSV lines parsed field by field in C (fastnumbers): a float32 matrix, or None where a line's
    width differs from the first's or a field is neither a number (surrounding blanks allowed, as
    ``float()`` allows them) nor empty."""
    if b"\n" in text:
        lines = text.split(b"\n")
        commas = lines[0].count(b",")
        for line in lines:
            if line.count(b",") != commas:
                return None
        fields, n_rows = text.replace(b"\n", b",").split(b","), len(lines)
    else:
        fields, n_rows = text.split(b","), 1
    try:
        values = try_array(fields, dtype=np.float32, on_fail=_missing_or_refused)
    except ValueError:
        return None
    return values.reshape(n_rows, -1)


def _missing_or_refused(field: bytes) -> float:
    """What the fast CSV parser does with a field that is not a number: an empty or blank
    field is a missing value; anything else sends the body to the careful parser."""
    if field.strip():
        raise ValueError(field)
    return np.nan


def _careful_csv(text: bytes) -> np.ndarray:
    """Parse field by field; raise RequestError naming the first row and column that is not
    a number, or the first row whose length differs from the first row's."""
    try:
        lines = text.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"the CSV body is not UTF-8 text (byte {exc.start})") from None
    rows = []
    width = None
    for row_number, line in enumerate(lines, start=1):
        fields = line.split(",")
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            raise RequestError(400, f"row {row_number} has {len(fields)} values; row 1 has {width}")
        values = []
        for column, field in enumerate(fields, start=1):
            field = field.strip()
            if not field:
                values.append(np.nan)
                continue
            try:
                values.append(float(field))
            except ValueError:
                raise RequestError(400, f"row {row_number}, column {column}: {_shown(field)} "
                                        "is not a number") from None
        rows.append(values)
    return np.array(rows, dtype=np.float32)


# --- JSON and JSON lines ------------------------------------------------------

_TOO_DEEP = "the JSON body is nested too deeply; rows are lists of numbers"


# orjson's peak memory while parsing is about 15x the body (json's about 4x): 90 MB for a 6 MB
# body of numbers. Bodies from this size on keep json's footprint; they are not the hot path.
ORJSON_MAX_BYTES = 256 * 1024


def _json_loads(text: bytes):
    """orjson (Rust) first, about 4x faster on a row of numbers; what it refuses goes to the
    standard library's parser, which reads what orjson does not (NaN and Infinity as Python's
    json.dumps writes them, byte-order marks, UTF-16, lone surrogates, numbers past float64)
    and whose errors the callers turn into 400s."""
    if len(text) < ORJSON_MAX_BYTES:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def decode_json(body: bytes, num_feature: int = 0) -> np.ndarray:
    """JSON as the SageMaker SDK's serializers send it: a list of rows, one flat row,
    ``{"instances": [row, ...]}`` (a row may be ``{"features": [...]}``) or
    ``{"features": [...]}``. ``null`` is a missing value."""
    if not body.strip():
        raise RequestError(400, "the request body is empty")
    try:
        document = _json_loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:   # json's parser recurses once per bracket: "[[[[..." runs out of stack
        raise RequestError(400, _TOO_DEEP) from None
    return _rows_from_json(document)


def decode_jsonlines(body: bytes, num_feature: int = 0) -> np.ndarray:
    """JSON lines: one row per line, each a list of numbers or ``{"features": [...]}``."""
    text = body.strip()
    if not text:
        raise RequestError(400, "the request body is empty")
    # One json.loads for the whole body: a JSON line holds no raw newline, so the lines
    # joined by commas inside brackets form one JSON array.
    try:
        document = _json_loads(b"[" + text.replace(b"\n", b",") + b"]")
    except (ValueError, UnicodeDecodeError):
        document = _jsonlines_one_by_one(text)   # to name the bad line
    except RecursionError:
        raise RequestError(400, _TOO_DEEP) from None
    if any(not isinstance(item, (list, dict)) for item in document):
        raise RequestError(400, "each JSON line must be a list of numbers or {\"features\": [...]}")
    return _rows_from_json(document)


def _jsonlines_one_by_one(text: bytes) -> list:
    rows = []
    for line_number, line in enumerate(text.split(b"\n"), start=1):
        try:
            rows.append(json.loads(line))
        except RecursionError:
            raise RequestError(400, _TOO_DEEP) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"line {line_number} is not valid JSON: {exc}") from None
    return rows


def _rows_from_json(document) -> np.ndarray:
    if isinstance(document, dict):
        if "instances" in document:
            rows = document["instances"]
        elif "features" in document:
            rows = [document["features"]]
        else:
            raise RequestError(400, 'a JSON object must hold "instances" or "features"')
    else:
        rows = document
    if not isinstance(rows, list) or not rows:
        raise RequestError(400, "the JSON body holds no rows")
    if not isinstance(rows[0], (list, dict)):
        rows = [rows]   # one flat row
    if isinstance(rows[0], dict):
        rows = _features_of(rows)
    try:
        matrix = np.asarray(rows, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):   # OverflowError: an integer beyond any float
        if any(isinstance(row, dict) for row in rows):   # lists and {"features": ...} mixed
            return _rows_from_json(_features_of(rows))
        _raise_bad_json_value(rows)
    if matrix.ndim != 2:
        _raise_bad_json_value(rows)
    return np.ascontiguousarray(matrix)


def _features_of(rows: list) -> list:
    try:
        return [row["features"] if isinstance(row, dict) else row for row in rows]
    except KeyError:
        raise RequestError(400, 'every instance must be a list or {"features": [...]}') from None


_LARGEST_FLOAT = 1.7976931348623157e308


def _raise_bad_json_value(rows: list) -> None:
    """Name the first row or value that keeps the rows from being a matrix of numbers."""
    width = None
    for row_number, row in enumerate(rows, start=1):
        if not isinstance(row, list):
            raise RequestError(400, f"row {row_number} is not a list of numbers")
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise RequestError(400, f"row {row_number} has {len(row)} values; row 1 has {width}")
        for column, value in enumerate(row, start=1):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _LARGEST_FLOAT:
                raise RequestError(400, f"row {row_number}, column {column}: {_shown(str(value))} "
                                        "is too large for a number")
            if value is None or isinstance(value, (int, float)):
                continue
            try:
                shown = _shown(json.dumps(value))
            except RecursionError:   # orjson reads 1,024 levels of brackets, more than json.dumps writes
                raise RequestError(400, _TOO_DEEP) from None
            raise RequestError(400, f"row {row_number}, column {column}: {shown} is not a number")
    raise RequestError(400, "the JSON rows are not a matrix of numbers")


# --- NumPy .npy -----------------------------------------------------------------

def decode_npy(body: bytes, num_feature: int = 0) -> np.ndarray:
    """A ``.npy`` file of numbers, 1-D (one row) or 2-D. Pickled (object) arrays are refused:
    unpickling a request would run the sender's code. The header's shape must match the data
    that follows it exactly, so a lying shape is refused before any memory is taken for it,
    and the rows are read in place from the body (no copy for float32)."""
    if not body:
        raise RequestError(400, "the request body is empty")
    shape, fortran_order, dtype, offset = _npy_header(body)
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise RequestError(400, f"the .npy array must hold numbers (bool, int or float); its dtype is {_shown(str(dtype))}")
    if len(shape) not in (1, 2) or any(size < 0 for size in shape):
        raise RequestError(400, f"the .npy array must be 1-D or 2-D with rows; its shape is {shape}")
    count = 1
    for size in shape:
        count *= size
    if count * dtype.itemsize != len(body) - offset:
        raise RequestError(400, f"the .npy header's shape {shape} of {dtype} needs {count * dtype.itemsize} "
                                f"bytes of data; the body has {len(body) - offset}")
    if count == 0:
        raise RequestError(400, f"the .npy array must be 1-D or 2-D with rows; its shape is {shape}")
    array = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    rows = array.reshape((1, -1) if len(shape) == 1 else shape, order="F" if fortran_order else "C")
    return np.ascontiguousarray(rows, dtype=np.float32)


def _npy_header(body: bytes) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran_order, dtype, offset of the data) from a .npy body's header."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
    except ValueError as exc:
        raise RequestError(400, f"the body is not a readable .npy file: {exc}") from None
    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is None:
        raise RequestError(400, f"the .npy format version {version[0]}.{version[1]} is not supported; use 1.0 or 2.0")
    try:
        shape, fortran_order, dtype = read_header(stream)
    except Exception as exc:   # noqa: BLE001 - numpy evaluates the sender's header text: its parser's
        # errors (ValueError, SyntaxError, TokenError, TypeError, OverflowError...) are not a closed set
        raise RequestError(400, f"the .npy header is not readable: {_shown(str(exc))}") from None
    return shape, fortran_order, dtype, stream.tell()


# --- LIBSVM ---------------------------------------------------------------------

def decode_libsvm(body: bytes, num_feature: int, index_base: int = 0) -> np.ndarray:
    """LIBSVM rows: an optional label, then ``index:value`` pairs; feature ``index`` is column
    ``index - index_base`` (0-based by default, as XGBoost reads LIBSVM; 1 with
    SERVE_LIBSVM_INDEX_BASE=1): the same for every request, whichever features it holds.
    An absent index is a missing value. Vectorised over all tokens: no Python loop per row."""
    text = body.strip()
    if not text:
        raise RequestError(400, "the request body is empty")
    # Newlines become tokens of their own ("|", which no valid token holds) so that every
    # token knows its row.
    tokens = np.array(text.replace(b"\n", b" | ").split())
    is_newline = tokens == b"|"
    row_of = np.cumsum(is_newline)
    n_rows = int(row_of[-1]) + 1 if tokens.size else 0
    colon = np.strings.find(tokens, b":")
    is_pair = colon >= 0
    is_label = ~is_newline & ~is_pair
    if is_label.any():
        # A label may only open a row.
        first_in_row = np.ones(tokens.size, dtype=bool)
        first_in_row[1:] = is_newline[:-1]
        misplaced = np.flatnonzero(is_label & ~first_in_row)
        if misplaced.size:
            at = misplaced[0]
            raise RequestError(400, f"row {row_of[at] + 1}: {_shown(tokens[at])} is not an index:value pair")
        labels = tokens[is_label]
        try:
            labels.astype(np.float32)
        except ValueError:
            bad = np.flatnonzero(is_label)[_first_unparseable(labels)]
            raise RequestError(400, f"row {row_of[bad] + 1}: the label {_shown(tokens[bad])} is not a number") from None
    pairs = tokens[is_pair]
    if pairs.size == 0:   # rows of labels only: every value missing (numpy cannot partition no tokens)
        empty = np.zeros(0, np.int64)
        return _libsvm_rows(n_rows, num_feature, empty, empty, np.zeros(0, np.float32))
    pair_rows = row_of[is_pair]
    index_text, _, value_text = np.strings.partition(pairs, b":")
    try:
        indices = index_text.astype(np.int64)
    except (ValueError, OverflowError):
        bad = next((i for i, t in enumerate(index_text) if not t.lstrip(b"+-").isdigit() or len(t) > 18), 0)
        raise RequestError(400, f"row {pair_rows[bad] + 1}: {_shown(pairs[bad])} has an index that is "
                                "not a whole number") from None
    try:
        values = value_text.astype(np.float32)
    except ValueError:
        bad = _first_unparseable(value_text)
        raise RequestError(400, f"row {pair_rows[bad] + 1}: {_shown(pairs[bad])} has a value that is "
                                "not a number") from None
    if index_base:
        indices -= index_base
    out_of_range = np.flatnonzero((indices < 0) | (indices >= num_feature))
    if out_of_range.size:
        raise RequestError(400, _libsvm_range_message(indices, out_of_range, pair_rows, num_feature,
                                                      index_base))
    return _libsvm_rows(n_rows, num_feature, pair_rows, indices, values)


def _libsvm_rows(n_rows: int, num_feature: int, pair_rows: np.ndarray, indices: np.ndarray,
                 values: np.ndarray) -> np.ndarray:
    """The dense rows (NaN where no pair), refused with 413 beyond MAX_SPARSE_CELLS values."""
    if n_rows * num_feature > MAX_SPARSE_CELLS:
        raise RequestError(413, f"the LIBSVM body expands to {n_rows} rows of {num_feature} features, "
                                f"more than {MAX_SPARSE_CELLS} values; send fewer rows per request")
    rows = np.full((n_rows, num_feature), np.nan, dtype=np.float32)
    rows[pair_rows, indices] = values
    return rows


def decode_libsvm_one_based(body: bytes, num_feature: int) -> np.ndarray:
    """LIBSVM rows whose indices start at 1 (the LIBSVM file format's own convention)."""
    return decode_libsvm(body, num_feature, index_base=1)


def _libsvm_range_message(indices: np.ndarray, out_of_range: np.ndarray, pair_rows: np.ndarray,
                          num_feature: int, index_base: int) -> str:
    """Which index is out of range, and how to switch when the other base would have read it."""
    bad = out_of_range[0]
    shown = int(indices[bad]) + index_base
    first, last = index_base, num_feature - 1 + index_base
    message = (f"row {pair_rows[bad] + 1}: feature index {shown} is out of range; the model has "
               f"features {first} to {last} ({index_base}-based indices)")
    other = 1 - index_base
    shifted = indices[out_of_range] + index_base - other
    if ((shifted >= 0) & (shifted < num_feature)).all() and (indices + index_base - other >= 0).all():
        message += (f". If your indices start at {other}, start the server with "
                    f"SERVE_LIBSVM_INDEX_BASE={other} (serve --libsvm-index-base {other})")
    return message


def _first_unparseable(texts: np.ndarray) -> int:
    for i, t in enumerate(texts):
        try:
            float(t)
        except ValueError:
            return i
    return 0


DECODERS: dict[str, Callable[[bytes, int], np.ndarray]] = {
    CSV: decode_csv,
    JSON: decode_json,
    JSONLINES: decode_jsonlines,
    NPY: decode_npy,
    LIBSVM: decode_libsvm,
    "text/x-libsvm": decode_libsvm,
    RECORDIO_PROTOBUF: decode_recordio_protobuf,
}
# Headers exactly as clients usually send them, looked up before any parsing.
_DECODER_BY_HEADER = {**DECODERS, "text/csv; charset=utf-8": decode_csv,
                      "application/json; charset=utf-8": decode_json}


# --- responses -------------------------------------------------------------------

def response_type(accept: str | None, default: str) -> str:
    """The response media type for an ``Accept`` header: the first supported type in the
    client's order of preference; no header or ``*/*`` gives ``default``.
    Raises RequestError 406 when nothing acceptable is supported."""
    if not accept or accept == "*/*":
        return default
    if accept in ENCODERS:
        return accept
    choices = []
    for position, item in enumerate(accept.split(",")):
        media_type, params = parse_options_header(item)
        try:
            quality = float(params.get("q", 1))
        except ValueError:
            quality = 0.0
        if quality > 0:
            choices.append((-quality, position, media_type.lower()))
    for _, _, media_type in sorted(choices):
        if media_type == "*/*" or (media_type.endswith("/*") and default.startswith(media_type[:-1])):
            return default
        if media_type in ENCODERS:
            return media_type
        if media_type == "text/*":
            return CSV
        if media_type == "application/*":
            return JSON
    raise RequestError(406, f"Accept {_shown(accept)} names no supported type; "
                            f"supported: {', '.join(ENCODERS)}")


# Up to this many rows, response texts are built with Python string operations (each numpy
# string function costs about a microsecond to set up, much for a one-row answer); beyond,
# with numpy's vectorised string functions: linear in the rows, no Python loop per row.
SMALL_RESPONSE_ROWS = 16

Texts = Union[list[str], np.ndarray]   # one text per row: a list (few rows) or a numpy str array


def format_numbers(values: np.ndarray) -> Texts:
    """Per-value text: integers as integers, floats in the shortest form that reads back
    to the same float32 (NaN as ``nan``)."""
    values = values.astype(np.int64 if values.dtype.kind in "iub" else np.float32, copy=False)
    if values.shape[0] <= SMALL_RESPONSE_ROWS:
        return [str(value) for value in values]   # a numpy scalar prints as astype(str) does
    return values.astype(str)


def _json_numbers(values: np.ndarray) -> Texts:
    text = format_numbers(values)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        finite = np.isfinite(values)   # JSON has no NaN or infinity: null
        text = ([t if ok else "null" for t, ok in zip(text, finite)] if isinstance(text, list)
                else np.where(finite, text, "null"))
    return text


def _joined(columns: list[Texts], separator: str, opening: str = "", closing: str = "") -> Texts:
    """Per row: ``opening + separator.join(the row's texts) + closing``."""
    if isinstance(columns[0], list):
        return [opening + separator.join(parts) + closing for parts in zip(*columns)]
    text = np.strings.add(opening, columns[0])
    for column in columns[1:]:
        text = np.strings.add(np.strings.add(text, separator), column)
    return np.strings.add(text, closing)


def _as_list(texts: Texts) -> list[str]:
    return texts if isinstance(texts, list) else texts.tolist()


def encode_csv(outputs: dict[str, np.ndarray], *, selected: bool, batch: bool) -> bytes:
    """CSV as the stock SageMaker XGBoost container writes it. Without selected outputs a
    one-value-per-row prediction is one comma-separated line (one value per line in batch
    transform); otherwise one line per row, the outputs in order, a list quoted as "[a, b]"."""
    end = "\n" if batch else ""
    if not selected:
        (scores,) = outputs.values()
        if scores.ndim == 1:
            return (("\n" if batch else ",").join(_as_list(format_numbers(scores))) + end).encode()
    fields = []
    for values in outputs.values():
        if values.ndim == 1:
            fields.append(format_numbers(values))
        elif selected:
            fields.append(_joined([format_numbers(c) for c in values.T], ", ", '"[', ']"'))
        else:
            fields.append(_joined([format_numbers(c) for c in values.T], ","))
    return ("\n".join(_as_list(_joined(fields, ","))) + end).encode()


def _json_objects(outputs: dict[str, np.ndarray]) -> list[str]:
    """One JSON object text per row, built column-wise."""
    fields = []
    for name, values in outputs.items():
        text = (_json_numbers(values) if values.ndim == 1
                else _joined([_json_numbers(c) for c in values.T], ",", "[", "]"))
        fields.append(_joined([[f'"{name}":'] * len(text), text], "") if isinstance(text, list)
                      else np.strings.add(f'"{name}":', text))
    return _as_list(_joined(fields, ",", "{", "}"))


def encode_json(outputs: dict[str, np.ndarray], *, selected: bool, batch: bool) -> bytes:
    """``{"predictions": [{name: value, ...}, ...]}``, one object per row."""
    return ('{"predictions":[' + ",".join(_json_objects(outputs)) + "]}").encode()


def encode_jsonlines(outputs: dict[str, np.ndarray], *, selected: bool, batch: bool) -> bytes:
    """One JSON object per row and line."""
    return ("\n".join(_json_objects(outputs)) + "\n").encode()


ENCODERS = {
    CSV: encode_csv,
    JSON: encode_json,
    JSONLINES: encode_jsonlines,
}
