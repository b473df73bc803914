"""XGBoost 1.x formats that current XGBoost cannot read, read safely and converted.

* The legacy binary model (``binf`` + C structs), parsed here with ``struct``
  and rebuilt as an XGBoost JSON document that current XGBoost loads.
* The pickled ``xgboost.core.Booster`` SageMaker's XGBoost 1.x container wrote.
  It is read by :class:`BoosterUnpickler`, which resolves exactly two globals
  (``xgboost.core.Booster``, to an inert placeholder, and ``builtins.bytearray``)
  and refuses every other, so nothing in the file is ever executed. The
  Booster's state holds the model bytes in one of two layouts:

  - XGBoost 1.0-1.2: ``CONFIG-offset:`` + int64 offset + legacy binary model +
    JSON configuration;
  - XGBoost 1.3+: a JSON or UBJSON snapshot ``{"Config": ..., "Model": ...}``
    whose ``Model`` is an ordinary JSON model document.

Treelite reads the original bytes (:func:`to_treelite`), independently of the
conversion (:func:`to_xgboost_json`), so the two can be checked against each other.
"""
from __future__ import annotations

import io
import json
import pickle
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_core import ubjson
from model_core.errors import FormatError

CONFIG_HEADER = b"CONFIG-offset:"
# sizeof() of XGBoost 1.x's on-disk structs (include/xgboost/*.h, checked by static_assert there).
LEARNER_PARAM_BYTES = 136
GBTREE_PARAM_BYTES = 160
TREE_PARAM_BYTES = 148
NODE_DTYPE = np.dtype([("parent", "<i4"), ("cleft", "<i4"), ("cright", "<i4"), ("sindex", "<u4"),
                       ("info", "<f4")])
STAT_DTYPE = np.dtype([("loss_chg", "<f4"), ("sum_hess", "<f4"), ("base_weight", "<f4"),
                       ("leaf_child_cnt", "<i4")])
MAX_TREES = 1_000_000
MAX_NODES = 1 << 26
NOT_A_NODE = 2147483647         # how XGBoost's JSON writes the root's parent
DEFAULT_NAME = re.compile(r"f\d+")


# --- the restricted unpickler -----------------------------------------------

class _BoosterPlaceholder:
    """Stands in for xgboost.core.Booster while unpickling: holds the state, runs nothing."""

    def __setstate__(self, state):
        self.state = state


class BoosterUnpickler(pickle.Unpickler):
    """Unpickles a 1.x ``xgboost.core.Booster`` and nothing else.

    ``find_class`` is the only way a pickle reaches code; it returns the inert
    placeholder for the Booster and ``bytearray`` for its model bytes, and
    raises for any other global, before anything could run.
    """

    ALLOWED = {("xgboost.core", "Booster"): _BoosterPlaceholder, ("builtins", "bytearray"): bytearray}

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"the pickle refers to {module}.{name}; only an xgboost.core.Booster's state is "
                f"accepted, so it was refused without running anything") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("the pickle uses persistent ids; refused")


def unpickle_booster_state(raw: bytes, origin: str = "pickle") -> dict:
    """The state dict of a pickled 1.x Booster; raises FormatError for anything else."""
    try:
        obj = BoosterUnpickler(io.BytesIO(raw)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            struct.error, MemoryError, RecursionError) as exc:
        raise FormatError(f"{origin}: refused: {exc}") from exc
    if not isinstance(obj, _BoosterPlaceholder) or not isinstance(getattr(obj, "state", None), dict):
        raise FormatError(f"{origin}: the pickle holds a {type(obj).__name__}, not an xgboost Booster")
    handle = obj.state.get("handle")
    if not isinstance(handle, (bytes, bytearray)):
        raise FormatError(f"{origin}: the pickled Booster holds no model bytes")
    return obj.state


# --- the legacy binary format ------------------------------------------------

@dataclass
class LegacyModel:
    """What a 1.x legacy binary model holds, parsed."""

    base_score: float
    num_feature: int
    num_class: int
    objective: str
    booster: str
    version: tuple[int, int]
    trees: list[dict] = field(default_factory=list)       # XGBoost JSON tree objects
    tree_info: list[int] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)


class _Stream:
    def __init__(self, raw: bytes, origin: str):
        self.raw, self.pos, self.origin = raw, 0, origin

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.raw):
            raise FormatError(f"{self.origin}: legacy binary model is truncated at byte {self.pos}")
        chunk = self.raw[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self, limit: int = 1 << 20) -> str:
        (n,) = self.unpack("Q")
        if n >= 0xFFFFFFFF:          # XGBoost's own backward-compatibility quirk for old files
            self.take(4)
            n >>= 32
        if n > limit:
            raise FormatError(f"{self.origin}: legacy binary model has a {n}-byte string; corrupt")
        return self.take(n).decode("utf-8", "replace")


def _tree_to_json(nodes: np.ndarray, stats: np.ndarray, tree_id: int, num_feature: int) -> dict:
    """One legacy tree as XGBoost's JSON tree object, keeping only nodes reachable
    from the root (pruning leaves deleted nodes behind), ids in their original order."""
    reachable, stack = set(), [0]
    while stack:
        i = stack.pop()
        if i in reachable or not 0 <= i < len(nodes):
            raise ValueError(f"tree {tree_id} is not a tree (node {i})")
        reachable.add(i)
        if nodes["cleft"][i] != -1:
            stack += [int(nodes["cleft"][i]), int(nodes["cright"][i])]
    keep = np.array(sorted(reachable))
    new_id = np.full(len(nodes), -1, dtype=np.int64)
    new_id[keep] = np.arange(len(keep))
    n, s = nodes[keep], stats[keep]
    is_leaf = n["cleft"] == -1
    left = np.where(is_leaf, -1, new_id[np.maximum(n["cleft"], 0)])
    right = np.where(is_leaf, -1, new_id[np.maximum(n["cright"], 0)])
    parents = np.full(len(keep), NOT_A_NODE, dtype=np.int64)
    for children in (left, right):
        has = children != -1
        parents[children[has]] = np.nonzero(has)[0]
    return {
        "base_weights": s["base_weight"].tolist(), "categories": [], "categories_nodes": [],
        "categories_segments": [], "categories_sizes": [],
        "default_left": (n["sindex"] >> 31).astype(int).tolist(), "id": tree_id,
        "left_children": left.tolist(), "loss_changes": s["loss_chg"].tolist(),
        "parents": parents.tolist(), "right_children": right.tolist(),
        "split_conditions": n["info"].tolist(),
        "split_indices": np.where(is_leaf, 0, n["sindex"] & 0x7FFFFFFF).astype(int).tolist(),
        "split_type": [0] * len(keep), "sum_hessian": s["sum_hess"].tolist(),
        "tree_param": {"num_deleted": "0", "num_feature": str(num_feature),
                       "num_nodes": str(len(keep)), "size_leaf_vector": "1"},
    }


def parse_legacy_binary(raw: bytes, origin: str = "model") -> LegacyModel:
    """Parse an XGBoost 1.x legacy binary model; raises FormatError."""
    s = _Stream(raw, origin)
    if raw.startswith(b"binf"):
        s.take(4)
    base_score, num_feature, num_class, extra_attrs, _, major, minor = s.unpack("fIiiiII")
    s.take(LEARNER_PARAM_BYTES - 28)
    objective, booster = s.string(), s.string()
    if booster != "gbtree":
        raise FormatError(f"{origin}: {booster!r} boosters are not supported (only gbtree tree ensembles)")
    num_trees = s.unpack("i")[0]
    s.take(GBTREE_PARAM_BYTES - 4)
    if not 0 <= num_trees <= MAX_TREES:
        raise FormatError(f"{origin}: legacy binary model claims {num_trees} trees; corrupt")
    model = LegacyModel(base_score=float(base_score), num_feature=int(num_feature),
                        num_class=int(num_class), objective=objective, booster=booster,
                        version=(int(major), int(minor)))
    for tree_id in range(num_trees):
        _, num_nodes, _, _, _, size_leaf_vector = s.unpack("iiiiii")
        s.take(TREE_PARAM_BYTES - 24)
        if not 0 < num_nodes <= MAX_NODES:
            raise FormatError(f"{origin}: tree {tree_id} claims {num_nodes} nodes; corrupt")
        nodes = np.frombuffer(s.take(NODE_DTYPE.itemsize * num_nodes), dtype=NODE_DTYPE)
        stats = np.frombuffer(s.take(STAT_DTYPE.itemsize * num_nodes), dtype=STAT_DTYPE)
        if size_leaf_vector != 0:
            raise FormatError(f"{origin}: vector-leaf trees are not supported")
        try:
            model.trees.append(_tree_to_json(nodes, stats, tree_id, model.num_feature))
        except ValueError as exc:
            raise FormatError(f"{origin}: {exc}; corrupt model") from exc
    model.tree_info = list(s.unpack(f"{num_trees}i")) if num_trees else []
    if extra_attrs:
        (count,) = s.unpack("Q")
        if count > 10_000:
            raise FormatError(f"{origin}: {count} attributes; corrupt")
        for _ in range(count):
            key = s.string()
            model.attributes[key] = s.string()
    return model


def legacy_to_json_doc(model: LegacyModel, feature_names: list[str] | None = None) -> dict:
    """An XGBoost JSON model document for ``model``, in current XGBoost's schema.

    The document's objective and learner sections come from current XGBoost
    itself (an empty booster with the same objective, classes and base score),
    so their layout is always the one the running XGBoost expects; the trees
    are the legacy model's.
    """
    import xgboost as xgb

    groups = max(1, model.num_class)
    if len(model.trees) % groups:
        raise FormatError(f"{len(model.trees)} trees do not divide into {groups} classes")
    params = {"objective": model.objective, "num_feature": model.num_feature,
              "base_score": model.base_score}
    if model.num_class > 1:
        params["num_class"] = model.num_class
    try:
        template = json.loads(bytes(xgb.Booster(params).save_raw("json")))
    except xgb.core.XGBoostError as exc:
        raise FormatError(f"objective {model.objective!r} is not known to XGBoost {xgb.__version__}: "
                     f"{str(exc).splitlines()[0]}") from exc
    learner = template["learner"]
    gbm = learner["gradient_booster"]["model"]
    gbm["trees"] = model.trees
    gbm["tree_info"] = model.tree_info
    gbm["gbtree_model_param"]["num_trees"] = str(len(model.trees))
    gbm["iteration_indptr"] = list(range(0, len(model.trees) + 1, groups))
    learner["attributes"] = {k: v for k, v in model.attributes.items() if not k.startswith("SAVED_PARAM_")}
    if feature_names and len(feature_names) == model.num_feature:
        learner["feature_names"] = list(feature_names)
        learner["feature_types"] = ["float"] * model.num_feature
    return template


# --- one entry for formats.SourceModel -----------------------------------------

@dataclass
class Decoded:
    """The model inside a legacy source: ``kind`` "legacy_binary" (``binary`` holds
    it) or "json_model" (``document`` holds a JSON model document)."""

    kind: str
    binary: bytes = b""
    document: dict | None = None
    feature_names: list[str] | None = None


def _names(value) -> list[str] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    if all(DEFAULT_NAME.fullmatch(v) and v == f"f{i}" for i, v in enumerate(value)):
        return None      # XGBoost 1.x's automatic names carry no information
    return value


def decode(raw: bytes, fmt: str, origin: str) -> Decoded:
    """What the bytes ``raw`` of a legacy_binary or pickle model hold; raises FormatError.
    (The caller keeps the result: ``formats.SourceModel`` decodes once.)"""
    if fmt == "legacy_binary":
        return Decoded("legacy_binary", binary=raw)
    if fmt != "pickle":
        raise FormatError(f"{origin}: {fmt} is not a legacy format")
    state = unpickle_booster_state(raw, origin)
    handle = bytes(state["handle"])
    names = _names(state.get("feature_names"))
    if handle.startswith(CONFIG_HEADER):
        start = len(CONFIG_HEADER) + 8
        (offset,) = struct.unpack("<q", handle[len(CONFIG_HEADER):start])
        if not 0 < offset <= len(handle) - start:
            raise FormatError(f"{origin}: the Booster's CONFIG-offset is out of range; corrupt")
        return Decoded("legacy_binary", binary=handle[start:start + offset], feature_names=names)
    if handle.startswith(b"binf"):
        return Decoded("legacy_binary", binary=handle, feature_names=names)
    try:
        snapshot = (json.loads(handle) if handle.lstrip()[:2] in (b'{"', b"{ ", b"{\n")
                    else ubjson.loads(handle))
        document = snapshot["Model"]
        document["learner"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{origin}: the pickled Booster's model bytes are not a format "
                          f"this compiler knows ({handle[:16]!r}...)") from exc
    return Decoded("json_model", document=document, feature_names=names)


def to_xgboost_json(decoded: Decoded, origin: str) -> bytes:
    """The decoded model as XGBoost JSON text that current XGBoost loads; raises FormatError."""
    if decoded.kind == "json_model":
        document = decoded.document
        if decoded.feature_names and not document["learner"].get("feature_names"):
            document["learner"]["feature_names"] = decoded.feature_names
    else:
        document = legacy_to_json_doc(parse_legacy_binary(decoded.binary, origin), decoded.feature_names)
    return json.dumps(document).encode()


def to_treelite(decoded: Decoded):
    """A treelite.Model read by Treelite from the original model bytes."""
    import treelite

    if decoded.kind == "json_model":
        return treelite.frontend.from_xgboost_json(json.dumps(decoded.document))
    with tempfile.TemporaryDirectory(prefix="mc-legacy-") as tmp:
        path = Path(tmp) / "model.bin"
        path.write_bytes(decoded.binary)
        return treelite.frontend.load_xgboost_model_legacy_binary(path)
