"""Bounds a model's bytes must keep before XGBoost, Treelite or this package parse them.

XGBoost and Treelite parse recursively in C++ and trust the counts a model states: a JSON
model nested 50,000 brackets deep crashes the process (segmentation fault), and one that
claims a billion classes makes Treelite allocate 15 GB. So the structure is checked first,
in bounded time and memory: nesting depth, and the counts XGBoost writes into the model
(classes, targets, features, trees, nodes), each against a limit or against the size of
the file (a tree or a node takes more than one byte) (:func:`check_count`).

The legacy formats (``model_core.legacy``) are held to the same counts: the binary
reader checks each count as it meets it, before it allocates for it; a pickle is scanned
opcode by opcode (``pickletools``, which reads no object into being) before it is
unpickled: a few bytes of pickle build a nested list or an empty string of ~50 bytes
each, so its opcodes and the depth of its stack are bounded (:func:`check_pickle`); the
JSON or UBJSON model a pickled Booster holds goes through :func:`check_model_bytes`.
"""
from __future__ import annotations

import pickletools
import re

import numpy as np

from model_core import ubjson
from model_core.errors import FormatError

MAX_DEPTH = ubjson.MAX_DEPTH      # XGBoost writes about 8 levels
MAX_OUTPUTS = 10_000              # classes, targets or leaf-vector size
MAX_FEATURES = 2**31 - 1          # Treelite's int
# counts that must fit in the file; the others have their own limit
SIZED_BY_FILE = ("num_trees", "num_nodes", "num_parallel_tree")
LIMITS = {"num_class": MAX_OUTPUTS, "num_target": MAX_OUTPUTS, "size_leaf_vector": MAX_OUTPUTS,
          "num_feature": MAX_FEATURES}
KEYS = frozenset(LIMITS) | frozenset(SIZED_BY_FILE)
# A pickled 1.x Booster is a class, a state dict and its model bytes, plus two opcodes or so per
# feature name: a million opcodes leave room for ~250,000 named features (and bound what the
# objects they make can cost to ~100 MB).
MAX_PICKLE_OPCODES = 1_000_000
# Python's pickler stacks up to 1,000 items of a list or dict before each APPENDS or SETITEMS.
MAX_PICKLE_STACK = 2_000

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_COUNT = re.compile(rb'"(' + b"|".join(k.encode() for k in sorted(KEYS)) + rb')"\s*:\s*"?([^",}\]\s]*)')


def check_model_bytes(raw: bytes, fmt: str, origin: str) -> None:
    """Raises FormatError when a ``json`` or ``ubjson`` model is nested too deeply, malformed
    (UBJSON), or states a count beyond its limit; the legacy formats are checked as
    ``model_core.legacy`` reads them (:func:`check_count`, :func:`check_pickle`)."""
    if fmt == "json":
        depth = _json_depth(raw)
        if depth > MAX_DEPTH:
            raise FormatError(f"{origin}: JSON nested {depth} levels deep (at most {MAX_DEPTH}); not an XGBoost model")
        found: dict[str, list] = {}
        for key, value in _JSON_COUNT.findall(raw):
            found.setdefault(key.decode(), []).append(value.decode())
    elif fmt == "ubjson":
        try:
            found = ubjson.scan(raw, KEYS, MAX_DEPTH)
        except ubjson.UBJSONError as exc:
            raise FormatError(f"{origin}: not a readable UBJSON model: {exc}") from None
    else:
        return
    for key, values in found.items():
        for value in values:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise FormatError(f"{origin}: {key} is {value!r}, not a number") from None
            check_count(key, number, len(raw), origin, shown=value)


def check_count(key: str, number: float, file_bytes: int, origin: str, shown: object = None) -> None:
    """Raises FormatError unless the count ``key`` (one of ``KEYS``) is between 0 and its limit:
    ``LIMITS[key]``, or for trees and nodes the size of the file (``file_bytes``)."""
    limit = file_bytes if key in SIZED_BY_FILE else LIMITS[key]
    if not 0 <= number <= limit:
        raise FormatError(f"{origin}: the model claims {key} = {number if shown is None else shown}, beyond "
                          f"the limit of {limit:,}; refused before parsing it")


def check_pickle(raw: bytes, origin: str) -> None:
    """Raises FormatError when a pickle is malformed, has more than ``MAX_PICKLE_OPCODES``
    opcodes, or stacks objects (and marks) deeper than ``MAX_PICKLE_STACK`` (what nests objects
    in a pickle, memo references aside); nothing is unpickled."""
    opcodes, depth, marks = 0, 0, []   # depth: the unpickler's stack, marks included; marks: depth at each
    try:
        for opcode, _, _ in pickletools.genops(raw):
            opcodes += 1
            if opcodes > MAX_PICKLE_OPCODES:
                raise FormatError(f"{origin}: the pickle has more than {MAX_PICKLE_OPCODES:,} opcodes (a pickled "
                                  "Booster has a few, plus two or so per feature name); refused before unpickling it")
            before, after = opcode.stack_before, opcode.stack_after
            if pickletools.markobject in after:        # MARK
                marks.append(depth)
            if pickletools.markobject in before:       # pops down to the last mark, and what lies under it
                below = before.index(pickletools.markobject)
                depth = (marks.pop() if marks else depth) - below + len(after)
            else:
                depth = max(depth - len(before), 0) + len(after)
            if depth > MAX_PICKLE_STACK:
                raise FormatError(f"{origin}: the pickle stacks objects more than {MAX_PICKLE_STACK:,} deep (a "
                                  "pickled Booster's stack holds a few, or a batch of 1,000 feature names); refused "
                                  "before unpickling it")
    except FormatError:
        raise
    except ValueError as exc:   # what pickletools says of an unknown opcode, or an argument cut short
        raise FormatError(f"{origin}: refused: not a readable pickle: {exc}") from None


def _json_depth(raw: bytes) -> int:
    """The deepest bracket nesting of a JSON text, strings left out (a regex and numpy:
    no Python loop over the bytes, memory a fraction of the text's)."""
    text = _JSON_STRING.sub(b"", raw)
    codes = np.frombuffer(text, dtype=np.uint8)
    brackets = codes[np.isin(codes, np.frombuffer(b"[{]}", dtype=np.uint8))]
    if brackets.size == 0:
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max())
