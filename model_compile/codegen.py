"""model_compile's own code generator ("kernel"): a model's trees as compact node arrays,
walked by one hand-written C kernel (``kernel.c``) instead of TL2cgen's if/else code.

The generated C file is the model's data (8-byte nodes, breadth first; leaf values;
per-tree offsets, depths and classes; base margins; the objective's transform) followed
by ``kernel.c``. One translation unit, one gcc call: a few seconds where TL2cgen's code
for a 300-tree model takes half a minute, and a library a fraction of the size.

What it does not handle is named by :func:`unsupported_reason` and compiled by TL2cgen
instead: categorical splits, vector leaves, several targets, averaged (random forest)
outputs, comparisons other than XGBoost's ``<``, trees over 65,535 nodes, models over
32,767 features.
"""
from __future__ import annotations

import ctypes
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from model_compile.toolchain import DEFAULT_TOOLCHAIN, compiler_version

GENERATOR = "kernel"
FLAGS = ["-O3", "-fPIC", "-std=gnu99", "-shared"]
MAX_TREE_NODES = 1 << 16
MAX_FEATURES = 1 << 15
LANE_GROUP = 16     # trees are padded to a multiple of this (the widest trees-in-lanes walk)
POSTPROCESSORS = ("identity", "sigmoid", "exponential", "exponential_standard_ratio",
                  "logarithm_one_plus_exp", "hinge", "signed_square", "identity_multiclass",
                  "softmax", "multiclass_ova")
# The ISA codes mc_kernel_isa() returns.
ISA_NAMES = {0: "portable", 1: "avx2", 2: "avx512", 3: "neon"}
PORTABLE_ISA = 0


class Unsupported(ValueError):
    """The model holds something this generator does not compile; the message says what."""


@dataclass
class ForestArrays:
    """A model's trees in the kernel's layout (see kernel.c)."""

    num_feature: int
    num_class: int
    num_tree: int
    postprocessor: str
    sigmoid_alpha: float
    ratio_c: float
    base: np.ndarray           # float32 (num_class,)
    threshold: np.ndarray      # float32 per node (NaN for leaves)
    meta: np.ndarray           # uint32 per node: left | feature << 16 | missing_right << 31
    leaf: np.ndarray           # float32 per node (0 for splits)
    tree_off: np.ndarray       # int32 per padded tree
    tree_depth: np.ndarray     # int32 per padded tree
    tree_class: np.ndarray     # int32 per padded tree


def treelite_document(tl_model) -> dict:
    """Treelite's JSON dump of ``tl_model`` (header and trees), parsed."""
    return json.loads(tl_model.dump_as_json(pretty_print=False))


def unsupported_reason(doc: dict) -> str | None:
    """Why this generator cannot compile the model of Treelite document ``doc``, or None."""
    if doc.get("num_target", 1) != 1:
        return f"{doc['num_target']} targets (only one is supported)"
    if list(doc.get("leaf_vector_shape", [1, 1])) != [1, 1]:
        return "vector leaves (multi_strategy=multi_output_tree)"
    if doc.get("average_tree_output"):
        return "averaged tree outputs (random forest)"
    if doc.get("postprocessor") not in POSTPROCESSORS:
        return f"objective transform {doc.get('postprocessor')!r}"
    if doc.get("threshold_type") != "float32" or doc.get("leaf_output_type") != "float32":
        return "thresholds or leaves not float32"
    if int(doc.get("num_feature", 0)) >= MAX_FEATURES:
        return f"{doc['num_feature']} features (at most {MAX_FEATURES - 1})"
    for number, tree in enumerate(doc.get("trees", [])):
        if tree.get("has_categorical_split"):
            return f"categorical splits (tree {number})"
        if int(tree.get("num_nodes", 0)) >= MAX_TREE_NODES:
            return f"tree {number} has {tree['num_nodes']} nodes (at most {MAX_TREE_NODES - 1})"
        for node in tree["nodes"]:
            if "leaf_value" in node:
                if isinstance(node["leaf_value"], list):
                    return f"vector leaves (tree {number})"
            elif node.get("node_type") != "numerical_test_node" or node.get("comparison_op") != "<":
                return f"split {node.get('node_type')} {node.get('comparison_op')} (tree {number})"
    return None


def forest_arrays(doc: dict) -> ForestArrays:
    """Lay out the trees of Treelite document ``doc`` (raises Unsupported)."""
    reason = unsupported_reason(doc)
    if reason:
        raise Unsupported(reason)
    trees = doc.get("trees", [])
    num_class = max(1, max(doc.get("num_class") or [1]))
    classes = list(doc.get("class_id") or [0] * len(trees))
    thresholds: list[float] = []
    metas: list[int] = []
    leaves: list[float] = []
    offsets, depths = [], []
    for tree in trees:
        by_id = {node["node_id"]: node for node in tree["nodes"]}
        start = len(metas)
        # Breadth first, a split's two children side by side: new id -> old id.
        order, depth_of = [0], {0: 0}
        new_id = {0: 0}
        head = 0
        while head < len(order):
            node = by_id[order[head]]
            if "leaf_value" not in node:
                for child in (node["left_child"], node["right_child"]):
                    new_id[child] = len(order)
                    depth_of[child] = depth_of[order[head]] + 1
                    order.append(child)
            head += 1
        for position, old in enumerate(order):
            node = by_id[old]
            if "leaf_value" in node:
                thresholds.append(float("nan"))
                metas.append(position)               # itself, feature 0, missing left
                leaves.append(float(node["leaf_value"]))
            else:
                left = new_id[node["left_child"]]
                if new_id[node["right_child"]] != left + 1:
                    raise AssertionError("children must be side by side")
                metas.append(left | (int(node["split_feature_id"]) << 16)
                             | ((0 if node["default_left"] else 1) << 31))
                thresholds.append(float(node["threshold"]))
                leaves.append(0.0)
        offsets.append(start)
        depths.append(max(depth_of.values()))
    # Padding trees, up to a multiple of LANE_GROUP: one shared leaf worth 0, never added.
    padded = max(LANE_GROUP, -(-len(trees) // LANE_GROUP) * LANE_GROUP)
    pad_leaf = len(metas)
    thresholds.append(float("nan"))
    metas.append(0)
    leaves.append(0.0)
    offsets += [pad_leaf] * (padded - len(trees))
    depths += [0] * (padded - len(trees))
    classes = classes[:len(trees)] + [0] * (padded - len(trees))
    base = np.asarray(doc.get("base_scores") or [0.0] * num_class, dtype=np.float64).astype(np.float32)
    if base.size != num_class:
        raise Unsupported(f"{base.size} base scores for {num_class} classes")
    return ForestArrays(num_feature=int(doc["num_feature"]), num_class=num_class, num_tree=len(trees),
                        postprocessor=doc["postprocessor"], sigmoid_alpha=float(doc.get("sigmoid_alpha", 1.0)),
                        ratio_c=float(doc.get("ratio_c", 1.0)), base=base,
                        threshold=np.asarray(thresholds, dtype=np.float32),
                        meta=np.asarray(metas, dtype=np.uint32), leaf=np.asarray(leaves, dtype=np.float32),
                        tree_off=np.asarray(offsets, dtype=np.int32),
                        tree_depth=np.asarray(depths, dtype=np.int32),
                        tree_class=np.asarray(classes, dtype=np.int32))


def _c_float(value) -> str:
    value = np.float32(value)
    if np.isnan(value):
        return "NAN"
    if np.isinf(value):
        return "INFINITY" if value > 0 else "-INFINITY"
    return float(value).hex()


def _c_array(ctype: str, name: str, values, fmt=str, per_line: int = 12) -> str:
    items = [fmt(v) for v in values]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return f"static const {ctype} {name}[] = {{\n  " + ",\n  ".join(lines) + "\n};\n"


def generate_source(forest: ForestArrays) -> str:
    """The whole C file: the model's data, then kernel.c."""
    codes = "".join(f"#define MC_PP_{name.upper()} {i}\n" for i, name in enumerate(POSTPROCESSORS))
    groups8 = forest.tree_depth.reshape(-1, 8).max(axis=1)
    groups16 = forest.tree_depth.reshape(-1, 16).max(axis=1)
    nodes = ",\n  ".join(f"{{{_c_float(t)}, {int(m)}u}}" for t, m in zip(forest.threshold, forest.meta))
    header = (
        "/* Generated by model_compile.codegen: the model's data for kernel.c (below). */\n"
        "#include <math.h>\n#include <stdint.h>\n\n" + codes +
        f"#define MC_NUM_FEATURE {forest.num_feature}\n#define MC_NUM_CLASS {forest.num_class}\n"
        f"#define MC_NUM_TREE {forest.num_tree}\n#define MC_NUM_TREE_PADDED {forest.tree_off.size}\n"
        f"#define MC_POSTPROCESSOR MC_PP_{forest.postprocessor.upper()}\n"
        f"#define MC_SIGMOID_ALPHA ((float){_c_float(forest.sigmoid_alpha)})\n"
        f"#define MC_RATIO_C ((float){_c_float(forest.ratio_c)})\n\n"
        "struct mc_node { float threshold; uint32_t meta; };\n"
        "static const struct mc_node mc_nodes[] __attribute__((aligned(64))) = {\n  " + nodes + "\n};\n"
        + _c_array("float", "mc_leaf", forest.leaf, _c_float)
        + _c_array("int32_t", "mc_tree_off", forest.tree_off)
        + _c_array("int32_t", "mc_tree_depth", forest.tree_depth)
        + _c_array("int32_t", "mc_tree_class", forest.tree_class)
        + _c_array("int32_t", "mc_group_depth8", groups8)
        + _c_array("int32_t", "mc_group_depth16", groups16)
        + _c_array("float", "mc_base", forest.base, _c_float) + "\n")
    return header + kernel_source()


def kernel_source() -> str:
    """The text of kernel.c, the walk compiled after every model's data."""
    return resources.files("model_compile").joinpath("kernel.c").read_text()


@dataclass
class KernelBuild:
    path: Path
    params: dict          # what the manifest records of this build
    compiler: str
    flags: list[str]
    seconds: float


def build_kernel_library(doc: dict, libpath: Path, *, toolchain: str = DEFAULT_TOOLCHAIN,
                         options: list[str] | None = None) -> KernelBuild:
    """Generate and compile the library for Treelite document ``doc`` into ``libpath``.

    ``toolchain``: the compiler (a cross gcc for another target, see
    ``model_compile.toolchain``); ``options``: added code generation flags
    (``-mcpu=...``), recorded with the others.

    Raises Unsupported (the model holds what :func:`unsupported_reason` names) or
    RuntimeError (the C compiler failed; its output in the message).
    """
    started = time.perf_counter()
    forest = forest_arrays(doc)
    compiler = compiler_version(toolchain)
    flags = FLAGS + list(options or [])
    with tempfile.TemporaryDirectory(prefix="mc-kernel-") as tmp:
        src = Path(tmp) / "model.c"
        src.write_text(generate_source(forest))
        command = [toolchain, *flags, str(src), "-o", str(libpath), "-lm"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:-3])} failed: {done.stderr.strip()[-2000:]}")
    params = {"nodes": int(forest.meta.size), "max_depth": int(forest.tree_depth.max(initial=0))}
    return KernelBuild(path=Path(libpath), params=params, compiler=compiler, flags=flags,
                       seconds=time.perf_counter() - started)


class KernelWalks:
    """One walk of a kernel library at a time (``mc_predict_dense_isa``), on this machine:
    verification runs every walk the CPU has, not only the one the library chose, because
    another instance of the same architecture may choose another (AVX2 where this one has
    AVX-512). ``chosen``: the walk ``mc_predict_dense`` runs here."""

    def __init__(self, libpath: str | Path, num_feature: int, width: int):
        # dlopen hands back the library CompiledModel already loaded from this path.
        lib = ctypes.CDLL(str(Path(libpath).resolve()), mode=ctypes.RTLD_LOCAL)
        self.num_feature, self.width = num_feature, width
        self.chosen = int(lib.mc_kernel_isa())
        self._predict = lib.mc_predict_dense_isa
        self._predict.restype = ctypes.c_int32
        self._predict.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32,
                                  ctypes.c_void_p, ctypes.c_int32]

    def predict(self, X: np.ndarray, isa: int, margin: bool = False) -> np.ndarray | None:
        """(n,) or (n, width) outputs of walk ``isa``; None when this CPU lacks it."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        out = np.empty((X.shape[0], self.width), dtype=np.float32)
        rc = self._predict(X.ctypes.data, X.shape[0], self.num_feature, int(margin), out.ctypes.data, isa)
        if rc == -3:
            return None
        if rc != 0:
            raise RuntimeError(f"mc_predict_dense_isa failed with {rc}")
        return out.reshape(-1) if self.width == 1 else out
