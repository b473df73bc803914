"""XGBoost 0.7x-1.x formats that current XGBoost cannot read, read safely and converted.

* The legacy binary model (C structs), parsed here with ``struct`` and rebuilt
  as an XGBoost JSON document that current XGBoost loads. XGBoost 1.x starts it
  with ``binf``; 0.7x-0.90 wrote the same structs without that header, and
  saved ``base_score`` as a margin (1.x saves it untransformed and records its
  version, which is 0.0 in older files). gbtree, dart (trees + ``weight_drop``)
  and gblinear (one weight vector) boosters.
* The pickled ``xgboost.core.Booster`` SageMaker's XGBoost 0.90 and 1.x containers wrote.
  It is read by :class:`BoosterUnpickler`, which resolves exactly two globals
  (``xgboost.core.Booster``, to an inert placeholder, and ``builtins.bytearray``)
  and refuses every other, so nothing in the file is ever executed. The
  Booster's state holds the model bytes in one of three layouts:

  - XGBoost 0.7x-0.90: the headerless legacy binary model itself;
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

from model_core import bounds, ubjson
from model_core.errors import FormatError

CONFIG_HEADER = b"CONFIG-offset:"
# sizeof() of XGBoost 1.x's on-disk structs (include/xgboost/*.h, checked by static_assert there).
LEARNER_PARAM_BYTES = 136
GBTREE_PARAM_BYTES = 160
TREE_PARAM_BYTES = 148
GBLINEAR_PARAM_BYTES = 136
NODE_DTYPE = np.dtype([("parent", "<i4"), ("cleft", "<i4"), ("cright", "<i4"), ("sindex", "<u4"),
                       ("info", "<f4")])
STAT_DTYPE = np.dtype([("loss_chg", "<f4"), ("sum_hess", "<f4"), ("base_weight", "<f4"),
                       ("leaf_child_cnt", "<i4")])
MAX_TREES = 1_000_000
MAX_NODES = 1 << 26
NOT_A_NODE = 2147483647         # how XGBoost's JSON writes the root's parent
DEFAULT_NAME = re.compile(r"f\d+")
BOOSTERS = ("gbtree", "dart", "gblinear")
_OBJECTIVE_NAME = re.compile(rb"[a-z]+(:[a-z_]+)+")
# A headerless binary's first string (the objective) starts right after the learner's struct.
HEADERLESS_HEAD_BYTES = LEARNER_PARAM_BYTES + 8 + 64 + 8 + len("gblinear")


def is_headerless_binary(head: bytes) -> bool:
    """True when ``head`` starts like a 0.7x-0.90 binary model: the learner's struct (a finite
    base_score), then an objective name and a booster name as length-prefixed strings."""
    if len(head) < LEARNER_PARAM_BYTES + 16:
        return False
    (base_score,) = struct.unpack_from("<f", head)
    (n,) = struct.unpack_from("<Q", head, LEARNER_PARAM_BYTES)
    start = LEARNER_PARAM_BYTES + 8
    if not (np.isfinite(base_score) and 3 <= n <= 64 and len(head) >= start + n + 8):
        return False
    if not _OBJECTIVE_NAME.fullmatch(head[start:start + n]):
        return False
    (m,) = struct.unpack_from("<Q", head, start + n)
    name = head[start + n + 8:start + n + 8 + m]
    return name.decode("ascii", "replace") in BOOSTERS


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
    """The state dict of a pickled 1.x Booster; raises FormatError for anything else (a pickle
    beyond ``bounds.check_pickle``'s bounds before unpickling any of it)."""
    bounds.check_pickle(raw, origin)
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
    weight_drop: list[float] = field(default_factory=list)     # dart: one weight per tree
    linear_weights: list[float] = field(default_factory=list)  # gblinear: (features + bias) x groups

    @property
    def base_score_is_margin(self) -> bool:
        """Before 1.0, the learner saved base_score after its objective's ProbToMargin."""
        return self.version[0] < 1


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
    """Parse an XGBoost 0.7x-1.x legacy binary model (with or without ``binf``); raises FormatError."""
    s = _Stream(raw, origin)
    if raw.startswith(b"binf"):
        s.take(4)
    base_score, num_feature, num_class, extra_attrs, _, major, minor = s.unpack("fIiiiII")
    bounds.check_count("num_feature", num_feature, len(raw), origin)
    bounds.check_count("num_class", num_class, len(raw), origin)
    s.take(LEARNER_PARAM_BYTES - 28)
    objective, booster = s.string(), s.string()
    if booster not in BOOSTERS:
        raise FormatError(f"{origin}: {booster!r} boosters are not supported (only gbtree, dart "
                          f"and gblinear)")
    model = LegacyModel(base_score=float(base_score), num_feature=int(num_feature),
                        num_class=int(num_class), objective=objective, booster=booster,
                        version=(int(major), int(minor)))
    if booster == "gblinear":
        _read_linear(s, model)
    else:
        _read_trees(s, model)
    # What follows the booster: attributes when flagged; 0.7x's count:poisson max_delta_step
    # string and 0.82+'s evaluation metric names come after and do not change predictions.
    if extra_attrs:
        (count,) = s.unpack("Q")
        if count > 10_000:
            raise FormatError(f"{origin}: {count} attributes; corrupt")
        for _ in range(count):
            key = s.string()
            model.attributes[key] = s.string()
    return model


def _read_trees(s: _Stream, model: LegacyModel) -> None:
    """GBTree's model (and dart's weight_drop after it) into ``model``."""
    origin = s.origin
    num_trees, _, _, _, num_pbuffer = s.unpack("iiiiq")
    s.take(GBTREE_PARAM_BYTES - 24)
    bounds.check_count("num_trees", num_trees, len(s.raw), origin)
    if not 0 <= num_trees <= MAX_TREES:
        raise FormatError(f"{origin}: legacy binary model claims {num_trees} trees; corrupt")
    if num_pbuffer != 0:
        raise FormatError(f"{origin}: the model carries a prediction buffer (XGBoost before 0.7); "
                          f"load and save it with XGBoost 0.7x-1.x first")
    for tree_id in range(num_trees):
        _, num_nodes, _, _, _, size_leaf_vector = s.unpack("iiiiii")
        s.take(TREE_PARAM_BYTES - 24)
        bounds.check_count("num_nodes", num_nodes, len(s.raw), origin)
        if not 0 < num_nodes <= MAX_NODES:
            raise FormatError(f"{origin}: tree {tree_id} claims {num_nodes} nodes; corrupt")
        nodes = np.frombuffer(s.take(NODE_DTYPE.itemsize * num_nodes), dtype=NODE_DTYPE)
        stats = np.frombuffer(s.take(STAT_DTYPE.itemsize * num_nodes), dtype=STAT_DTYPE)
        if size_leaf_vector > 1:      # 0 before 2.0, 1 (one scalar per leaf) from 2.0 on
            raise FormatError(f"{origin}: vector-leaf trees are not supported")
        try:
            model.trees.append(_tree_to_json(nodes, stats, tree_id, model.num_feature))
        except ValueError as exc:
            raise FormatError(f"{origin}: {exc}; corrupt model") from exc
    model.tree_info = list(s.unpack(f"{num_trees}i")) if num_trees else []
    if model.booster == "dart" and num_trees:
        model.weight_drop = _float_vector(s, "weight_drop")
        if len(model.weight_drop) != num_trees:
            raise FormatError(f"{origin}: dart model has {len(model.weight_drop)} tree weights for "
                              f"{num_trees} trees; corrupt")


def _read_linear(s: _Stream, model: LegacyModel) -> None:
    """GBLinear's model: its struct, then (num_feature + 1) x num_output_group weights."""
    num_feature, groups = s.unpack("Ii")
    bounds.check_count("num_feature", num_feature, len(s.raw), s.origin)
    bounds.check_count("num_target", groups, len(s.raw), s.origin)    # its output groups
    s.take(GBLINEAR_PARAM_BYTES - 8)
    model.linear_weights = _float_vector(s, "weights")
    if groups < 1 or len(model.linear_weights) != (num_feature + 1) * groups:
        raise FormatError(f"{s.origin}: gblinear model has {len(model.linear_weights)} weights for "
                          f"{num_feature} features and {groups} groups; corrupt")


def _float_vector(s: _Stream, what: str) -> list[float]:
    (n,) = s.unpack("Q")
    if n > MAX_NODES:
        raise FormatError(f"{s.origin}: {what} claims {n} values; corrupt")
    return np.frombuffer(s.take(4 * n), dtype="<f4").tolist()


def legacy_to_json_doc(model: LegacyModel, feature_names: list[str] | None = None) -> dict:
    """An XGBoost JSON model document for ``model``, in current XGBoost's schema.

    The document's objective and learner sections come from current XGBoost
    itself (an empty booster with the same booster, objective, classes and base
    score), so their layout is always the one the running XGBoost expects; the
    trees (or linear weights) are the legacy model's.
    """
    groups = max(1, model.num_class)
    if len(model.trees) % groups:
        raise FormatError(f"{len(model.trees)} trees do not divide into {groups} classes")
    # 0.7x-0.8x had GPU aliases of the CPU objectives, and reg:linear was renamed; same math.
    objective = model.objective.removeprefix("gpu:")
    objective = "reg:squarederror" if objective == "reg:linear" else objective
    params = {"objective": objective, "num_feature": model.num_feature, "booster": model.booster}
    if model.num_class > 1:
        params["num_class"] = model.num_class
    base_score = _base_score_for_margin(params, model.base_score) if model.base_score_is_margin \
        else model.base_score
    template = _template(dict(params, base_score=base_score))
    learner = template["learner"]
    booster = learner["gradient_booster"]
    if model.booster == "gblinear":
        booster["model"]["weights"] = model.linear_weights
    else:
        gbm = booster["gbtree"]["model"] if model.booster == "dart" else booster["model"]
        gbm["trees"] = model.trees
        gbm["tree_info"] = model.tree_info
        gbm["gbtree_model_param"]["num_trees"] = str(len(model.trees))
        gbm["iteration_indptr"] = list(range(0, len(model.trees) + 1, groups))
        if model.booster == "dart":
            booster["weight_drop"] = model.weight_drop
    learner["attributes"] = {k: v for k, v in model.attributes.items() if not k.startswith("SAVED_PARAM_")}
    if feature_names and len(feature_names) == model.num_feature:
        learner["feature_names"] = list(feature_names)
        learner["feature_types"] = ["float"] * model.num_feature
    return template


def _template(params: dict) -> dict:
    """Current XGBoost's JSON document of an empty booster with ``params``."""
    import xgboost as xgb

    try:
        return json.loads(bytes(xgb.Booster(params).save_raw("json")))
    except xgb.core.XGBoostError as exc:
        raise FormatError(f"objective {params['objective']!r} is not known to XGBoost {xgb.__version__}: "
                          f"{str(exc).splitlines()[0]}") from exc


def _base_score_for_margin(params: dict, margin: float) -> float:
    """The base_score current XGBoost turns into ``margin`` for this objective.

    Pre-1.0 files hold the margin; the document needs the value before the
    objective's ProbToMargin, which is the identity, a logit or a log. Each
    inverse is tried on an empty tree booster (the rule depends on the
    objective only) and the one XGBoost maps back onto the margin wins, so the
    rule is XGBoost's own, not a table kept here.
    """
    import xgboost as xgb

    candidates = [margin, float(1.0 / (1.0 + np.exp(-margin)))]
    if margin < 80:
        candidates.append(float(np.exp(margin)))
    # one feature: a model's (up to 2**31) would cost the row gigabytes, and the rule does not depend on it
    probe = dict(params, booster="gbtree", num_feature=1)
    zero_row = np.zeros((1, 1), dtype=np.float32)
    refused = None
    for value in candidates:
        try:       # an inverse outside the objective's range (a logistic base_score of 2) is refused
            template = _template(dict(probe, base_score=value))
        except FormatError as exc:
            refused = refused or exc
            continue
        booster = xgb.Booster()
        booster.load_model(bytearray(json.dumps(template).encode()))
        got = np.asarray(booster.inplace_predict(zero_row, predict_type="margin"), dtype=np.float64)
        if got.size and np.allclose(got, margin, rtol=1e-6, atol=1e-7):
            return value
    if refused and "Unknown objective" in str(refused):
        raise refused
    raise FormatError(f"objective {params['objective']!r}: no base_score that XGBoost "
                      f"{xgb.__version__} maps onto the saved margin {margin:g}")


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
    if handle.startswith(b"binf") or is_headerless_binary(handle[:HEADERLESS_HEAD_BYTES]):
        return Decoded("legacy_binary", binary=handle, feature_names=names)
    fmt = "json" if handle.lstrip()[:2] in (b'{"', b"{ ", b"{\n") else "ubjson"
    bounds.check_model_bytes(handle, fmt, f"{origin} (the pickled Booster's model)")
    try:
        snapshot = json.loads(handle) if fmt == "json" else ubjson.loads(handle)
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
        path.write_bytes(_without_gpu_alias(decoded.binary))
        return treelite.frontend.load_xgboost_model_legacy_binary(path)


def _without_gpu_alias(binary: bytes) -> bytes:
    """The binary with a 0.8x-0.90 ``gpu:`` objective renamed to the CPU objective it aliases
    (same math; Treelite knows only the CPU names), every other byte as it was."""
    start = (4 if binary.startswith(b"binf") else 0) + LEARNER_PARAM_BYTES
    if len(binary) < start + 8:
        return binary
    (n,) = struct.unpack_from("<Q", binary, start)
    name = binary[start + 8:start + 8 + n]
    if not name.startswith(b"gpu:"):
        return binary
    cpu = name[len(b"gpu:"):]
    return binary[:start] + struct.pack("<Q", len(cpu)) + cpu + binary[start + 8 + n:]
