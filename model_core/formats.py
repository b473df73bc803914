"""Find, detect and read every XGBoost model format a user may bring.

Formats, detected from the bytes, never from the file name:

* ``json``          - ``Booster.save_model("m.json")``: starts with ``{"``;
* ``ubjson``        - ``save_model("m.ubj")`` and SageMaker's XGBoost 1.7+ ``xgboost-model``:
  starts with ``{`` then a UBJSON type marker;
* ``legacy_binary`` - XGBoost 1.x ``save_model`` binary (``binf`` header), or
  0.7x-0.90's, the same structs without the header (recognised by the
  objective and booster names at their fixed place); current XGBoost cannot
  read either, Treelite can;
* ``pickle``        - the pickled ``xgboost.core.Booster`` SageMaker's XGBoost 0.90
  and 1.x containers wrote. Read with a restricted unpickler that executes nothing
  (:mod:`model_core.legacy`).

A source is a SageMaker ``model.tar.gz`` (extracted safely), a folder, or a
bare model file. Legacy formats are converted to UBJSON that current XGBoost loads.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from model_core import legacy
from model_core.artifact import MANIFEST_NAME, ArtifactError, safe_extract
from model_core.bounds import check_model_bytes
from model_core.errors import FormatError

FORMATS = ("json", "ubjson", "legacy_binary", "pickle")
# The file name SageMaker's built-in XGBoost gives its model inside model.tar.gz.
SAGEMAKER_MODEL_NAME = "xgboost-model"
MAX_MODEL_BYTES = 2 * 1024**3
_UBJSON_MARKERS = b"iUIlLdDSCTFZN$#"
_JSON_SPACE = b" \t\r\n"


def detect_format(head: bytes) -> str | None:
    """The model format of a file starting with ``head`` (``legacy.HEADERLESS_HEAD_BYTES``
    or more, 512 is plenty), or None."""
    if head.startswith(b"binf") or legacy.is_headerless_binary(head):
        return "legacy_binary"
    if head[:1] == b"\x80" and head[1:2] and 2 <= head[1] <= 5:
        return "pickle"
    stripped = head.lstrip(_JSON_SPACE)
    if stripped.startswith(b"{"):
        after = stripped[1:].lstrip(_JSON_SPACE)
        if after[:1] in (b'"', b"}"):
            return "json"
        if head[:1] == b"{" and head[1:2] and head[1] in _UBJSON_MARKERS:
            return "ubjson"
    return None


def _is_archive(head: bytes) -> bool:
    return head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar"


def _read_head(path: Path, n: int = 512) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def find_model_file(folder: Path) -> Path:
    """The model file in an extracted artifact or folder.

    SageMaker's ``xgboost-model`` wins; otherwise the one file whose bytes are
    a model (manifest.json and libraries are skipped). Raises FormatError.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    preferred = [p for p in files if p.name == SAGEMAKER_MODEL_NAME]
    if preferred:
        return preferred[0]
    candidates = [p for p in files if p.name != MANIFEST_NAME and detect_format(_read_head(p))]
    if len(candidates) == 1:
        return candidates[0]
    names = ", ".join(str(p.relative_to(folder)) for p in files) or "no files"
    if not candidates:
        raise FormatError(f"{folder}: no XGBoost model file found (has: {names})")
    raise FormatError(f"{folder}: several model files, name the one to compile "
                      f"or call it {SAGEMAKER_MODEL_NAME} (has: {names})")


@dataclass
class SourceModel:
    """A model file's bytes and what they are.

    ``format``: one of FORMATS. ``raw``: the file's bytes. ``origin``: where it
    came from (for messages). Conversions are computed once, on first use.
    """

    format: str
    raw: bytes
    origin: str

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def is_native(self) -> bool:
        """True when current XGBoost loads the bytes as they are (JSON/UBJSON)."""
        return self.format in ("json", "ubjson")

    @cached_property
    def _legacy(self) -> legacy.Decoded:
        """What a legacy_binary or pickle model holds, decoded once."""
        return legacy.decode(self.raw, self.format, self.origin)

    @cached_property
    def _ubjson(self) -> bytes:
        return self.raw if self.format == "ubjson" else bytes(self.to_booster().save_raw("ubj"))

    def to_ubjson(self) -> bytes:
        """The model as UBJSON that current XGBoost loads (legacy formats converted)."""
        return self._ubjson

    def to_booster(self):
        """A fresh ``xgboost.Booster``; raises FormatError when XGBoost cannot load the model."""
        import xgboost as xgb

        booster = xgb.Booster()
        try:
            if self.is_native:
                booster.load_model(bytearray(self.raw))
            else:
                booster.load_model(bytearray(legacy.to_xgboost_json(self._legacy, self.origin)))
        except xgb.core.XGBoostError as exc:
            raise FormatError(f"{self.origin}: XGBoost cannot load this {self.format} model: "
                              f"{_first_line(exc)}") from exc
        return booster

    def to_treelite(self):
        """A ``treelite.Model`` read from the ORIGINAL bytes; raises FormatError."""
        import treelite

        try:
            if self.format == "json":
                return treelite.frontend.from_xgboost_json(self.raw)
            if self.format == "ubjson":
                return treelite.frontend.from_xgboost_ubjson(self.raw)
            return legacy.to_treelite(self._legacy)
        except treelite.TreeliteError as exc:
            raise FormatError(f"{self.origin}: Treelite cannot read this {self.format} model: "
                              f"{_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    # XGBoost errors start with "[time] file:line: message" and end with a stack trace.
    return lines[0].split(": ", 1)[-1] if lines else type(exc).__name__


def _read_model_file(path: Path, origin: str) -> SourceModel:
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise FormatError(f"{origin}: {size} bytes is larger than any model this compiler accepts")
    raw = path.read_bytes()
    fmt = detect_format(raw[:512])
    if fmt is None:
        raise FormatError(f"{origin}: not an XGBoost model (JSON, UBJSON, legacy binary or a "
                          f"pickled Booster); it starts with {raw[:16]!r}")
    check_model_bytes(raw, fmt, origin)     # before any C++ parser sees the bytes
    return SourceModel(format=fmt, raw=raw, origin=origin)


def load_source(path: str | Path) -> SourceModel:
    """Read the model in ``path``: a SageMaker model.tar.gz, an extracted folder, or a model file.

    Returns a SourceModel holding the model's bytes (nothing on disk is kept).
    Raises FormatError (or FileNotFoundError) with a message naming the problem.
    """
    path = Path(path)
    if path.is_dir():
        model = find_model_file(path)
        return _read_model_file(model, f"{path}/{model.relative_to(path)}")
    if not path.is_file():
        raise FileNotFoundError(f"no such model file or folder: {path}")
    if _is_archive(_read_head(path)):
        with tempfile.TemporaryDirectory(prefix="mc-extract-") as tmp:
            try:
                safe_extract(path, Path(tmp))
            except ArtifactError as exc:
                raise FormatError(str(exc)) from exc
            model = find_model_file(Path(tmp))
            return _read_model_file(model, f"{path}:{model.relative_to(tmp)}")
    return _read_model_file(path, str(path))
