"""Bounds a JSON or UBJSON model's bytes must keep before XGBoost or Treelite parse them.

Both parse recursively in C++ and trust the counts a model states: a JSON model nested
50,000 brackets deep crashes the process (segmentation fault), and one that claims a
billion classes makes Treelite allocate 15 GB. So the structure is checked first, in
bounded time and memory: nesting depth, and the counts XGBoost writes into the model
(classes, targets, features, trees, nodes), each against a limit or against the size of
the file (a tree or a node takes more than one byte).
"""
from __future__ import annotations

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

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_COUNT = re.compile(rb'"(' + b"|".join(k.encode() for k in sorted(KEYS)) + rb')"\s*:\s*"?([^",}\]\s]*)')


def check_model_bytes(raw: bytes, fmt: str, origin: str) -> None:
    """Raises FormatError when a ``json`` or ``ubjson`` model is nested too deeply, malformed
    (UBJSON), or states a count beyond its limit; other formats pass unchecked."""
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
        limit = len(raw) if key in SIZED_BY_FILE else LIMITS[key]
        for value in values:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise FormatError(f"{origin}: {key} is {value!r}, not a number") from None
            if not 0 <= number <= limit:
                raise FormatError(f"{origin}: the model claims {key} = {value}, beyond the limit "
                                  f"of {limit:,}; refused before parsing it")


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
