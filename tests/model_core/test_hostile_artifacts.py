"""Hostile model archives and manifests are refused with a clear message, and nothing is
written outside the target folder (model_core.artifact, which serve and model-compile
both extract with)."""
import io
import json
import pickle
import struct
import tarfile

import pytest

from model_core.artifact import ArtifactError, Manifest, read_manifest, safe_extract
from model_core.legacy import unpickle_booster_state


def tar_with(path, *members, mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name, data=b"x", **fields):
    info = tarfile.TarInfo(name)
    info.size = len(data) if data is not None else 0
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


@pytest.mark.parametrize("bad, match", [
    (member("../escape"), "absolute or parent path"),
    (member("/etc/escape"), "absolute or parent path"),
    (member("a/../../escape"), "absolute or parent path"),
    (member("link", None, type=tarfile.SYMTYPE, linkname="/etc/passwd"), "is a link"),
    (member("hard", None, type=tarfile.LNKTYPE, linkname="xgboost-model"), "is a link"),
    (member("dev", None, type=tarfile.CHRTYPE, devmajor=1, devminor=3), "device"),
    (member("fifo", None, type=tarfile.FIFOTYPE), "device, FIFO"),
])
def test_hostile_members_are_refused_before_anything_is_written(tmp_path, bad, match):
    archive = tar_with(tmp_path / "model.tar.gz", member("xgboost-model", b"ok"), bad)
    out = tmp_path / "out"
    with pytest.raises(ArtifactError, match=match):
        safe_extract(archive, out)
    assert not out.exists()                        # nothing written, not even the good member
    assert not (tmp_path / "escape").exists()


def test_decompression_bomb_and_huge_sparse_file_are_refused(tmp_path):
    # 64 MB of zeros compress to about 64 KB; the limit is counted from the members' sizes
    # before any byte is extracted.
    archive = tar_with(tmp_path / "bomb.tar.gz", member("xgboost-model", b"\0" * (64 << 20)))
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(ArtifactError, match="expands beyond"):
        safe_extract(archive, tmp_path / "out", max_bytes=16 << 20)
    # a member that claims 1 TB (a sparse file, or a lying header) without the data
    with tarfile.open(tmp_path / "sparse.tar", "w") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = 1 << 40
        tar.addfile(info)                           # header only
    with pytest.raises(ArtifactError, match="expands beyond|not a readable tar"):
        safe_extract(tmp_path / "sparse.tar", tmp_path / "out2")
    assert not (tmp_path / "out2" / "xgboost-model").exists()


def test_not_a_tar(tmp_path):
    (tmp_path / "model.tar.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(ArtifactError, match="not a readable tar"):
        safe_extract(tmp_path / "model.tar.gz", tmp_path / "out")


def good_manifest_dict():
    return {"schema_version": 1, "model": {"file": "model.ubj", "source_format": "json", "source_sha256": "0" * 64,
                                           "objective": "binary:logistic", "num_feature": 7, "num_class": 1,
                                           "num_tree": 1},
            "library": {"file": "model.so", "sha256": "0" * 64, "platform": "linux_x86_64", "libc": "glibc 2.36",
                        "compiler": "gcc"},
            "verification": {"reference": "xgboost", "rows": 1, "max_abs_diff": 0.0, "tolerance": 1e-6},
            "versions": {}, "crossover_batch_size": None, "compile_seconds": 1.0, "created_at": "now"}


@pytest.mark.parametrize("section, name", [("library", "../../lib/evil.so"), ("library", "/tmp/evil.so"),
                                           ("model", "../model.ubj"), ("model", ""), ("library", 5)])
def test_manifest_naming_a_file_outside_the_folder_is_refused(tmp_path, section, name):
    data = good_manifest_dict()
    Manifest.from_dict(data)                        # the good one reads
    data[section]["file"] = name
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="manifest names the file"):
        read_manifest(tmp_path)


def test_pickle_that_calls_a_function_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with pytest.raises(ValueError, match="refers to io.open.*without running anything"):
        unpickle_booster_state(pickle.dumps(Evil()))
    assert not marker.exists()


# --- JSON/UBJSON models that would crash or exhaust XGBoost and Treelite ----------------------
# (checked by model_core.bounds before either parses the bytes: load_source is what
# model-compile and serve both read models with)

def deep_json(depth):
    return b'{"learner":' + b"[" * depth + b"]" * depth + b"}"


def deep_ubjson(depth):
    return b"{i\x07learner" + b"[" * depth + b"]" * depth + b"}"


def ubj_string(text):
    """As XGBoost writes a string: S, then its length as an int64 (L)."""
    return b"SL" + struct.pack(">q", len(text)) + text.encode()


@pytest.mark.parametrize("fmt, raw", [("json", deep_json(200_000)), ("json", deep_json(65)),
                                      ("ubjson", deep_ubjson(200_000))])
def test_models_nested_deeply_are_refused_before_xgboost_parses_them(tmp_path, fmt, raw):
    # 50,000 brackets crash XGBoost's recursive JSON reader (SIGSEGV): were the check gone,
    # this test would take the test process down with it.
    from model_core.formats import FormatError, load_source

    path = tmp_path / "model"
    path.write_bytes(raw)
    with pytest.raises(FormatError, match="nested.*deep"):
        load_source(path)


@pytest.mark.parametrize("key, value", [("num_class", "1000000000"), ("num_target", "99999999"),
                                        ("num_feature", "4000000000"), ("num_trees", "1000000000"),
                                        ("num_nodes", "1000000000"), ("num_class", "-1"), ("num_class", "lots")])
@pytest.mark.parametrize("fmt", ["json", "ubj"])
def test_models_claiming_huge_counts_are_refused(tmp_path, small_model_file, key, value, fmt):
    # a billion classes made Treelite allocate 15 GB; the counts are checked against limits
    # (classes, targets, features) or the file's size (trees, nodes) first
    from model_core.formats import FormatError, load_source

    model, _ = small_model_file("multi:softprob", fmt)
    raw = model.read_bytes()
    load_source(model)                               # the honest model reads
    if fmt == "json":
        before = f'"{key}":"'.encode()
        assert before in raw
        start = raw.index(before) + len(before)
        hostile = raw[:start] + value.encode() + raw[raw.index(b'"', start):]
    else:
        before = b"L" + struct.pack(">q", len(key)) + key.encode()
        assert before in raw and raw[raw.index(before) + len(before):][:2] == b"SL"
        start = raw.index(before) + len(before)
        (length,) = struct.unpack(">q", raw[start + 2:start + 10])
        hostile = raw[:start] + ubj_string(value) + raw[start + 10 + length:]
    path = tmp_path / f"hostile.{fmt}"
    path.write_bytes(hostile)
    with pytest.raises(FormatError, match=f"{key}.*(beyond the limit|not a number)"):
        load_source(path)


@pytest.mark.parametrize("raw", [b"[$Z#L\x7f\xff\xff\xff\xff\xff\xff\xff", b"[$T#l\x7f\xff\xff\xff",
                                 b"{#L\x00\x00\x00\x00\xff\xff\xff\xffi\x01a"])
def test_ubjson_counts_beyond_the_bytes_left_are_refused_at_once(raw):
    # typed nulls take no bytes: a count of 2**63 of them was a loop without end
    from model_core import ubjson

    with pytest.raises(ubjson.UBJSONError, match="claims"):
        ubjson.loads(raw)
    with pytest.raises(ubjson.UBJSONError, match="claims"):
        ubjson.scan(raw, frozenset())


# --- legacy binaries and pickles claiming absurd counts or nesting ------------------------------
# (model_core.bounds, as JSON/UBJSON: refused with FormatError before anything is allocated for them)

from pathlib import Path  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


def legacy_with(name, offset, fmt, value):
    """A legacy binary fixture with the field at ``offset`` (after ``binf``, if any) replaced."""
    raw = bytearray((FIXTURES / name).read_bytes())
    start = offset + (4 if raw.startswith(b"binf") else 0)
    raw[start:start + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(raw)


# the learner's struct: base_score (f4) at 0, num_feature (u4) at 4, num_class (i4) at 8
@pytest.mark.parametrize("name", ["binary-logistic-0.90.bin", "binary-logistic-1.7.6.bin"])
@pytest.mark.parametrize("key, offset, fmt, value", [("num_feature", 4, "<I", 4_000_000_000),
                                                     ("num_class", 8, "<i", 1_000_000_000),
                                                     ("num_class", 8, "<i", -3)])
def test_legacy_binaries_claiming_huge_counts_are_refused_before_reading_on(tmp_path, name, key, offset, fmt, value):
    # 4 billion features made the pre-1.0 base_score probe allocate a 16 GB row; a billion
    # classes go to XGBoost's and Treelite's class vectors
    from model_core.formats import FormatError, load_source
    from model_core.legacy import parse_legacy_binary

    hostile = legacy_with(name, offset, fmt, value)
    with pytest.raises(FormatError, match=f"claims {key} = {value}, beyond the limit"):
        parse_legacy_binary(hostile, "hostile.bin")
    path = tmp_path / "hostile.bin"
    path.write_bytes(hostile)
    with pytest.raises(FormatError, match=f"claims {key} = {value}"):
        load_source(path).to_booster()


def tree_offsets(name):
    """(offset of num_trees, offset of the first tree's num_nodes) in a gbtree legacy fixture."""
    raw = (FIXTURES / name).read_bytes()
    at = (4 if raw.startswith(b"binf") else 0) + 136
    for _ in range(2):   # objective, booster: length-prefixed strings
        (n,) = struct.unpack_from("<Q", raw, at)
        at += 8 + n
    return at - (4 if raw.startswith(b"binf") else 0), at + 160 + 4 - (4 if raw.startswith(b"binf") else 0)


@pytest.mark.parametrize("which, value, key", [(0, 900_000, "num_trees"), (1, 30_000_000, "num_nodes")])
def test_legacy_binaries_claiming_more_trees_or_nodes_than_the_file_holds_are_refused(which, value, key):
    from model_core.formats import FormatError
    from model_core.legacy import parse_legacy_binary

    name = "binary-logistic-1.7.6.bin"
    hostile = legacy_with(name, tree_offsets(name)[which], "<i", value)
    with pytest.raises(FormatError, match=f"claims {key} = {value}, beyond the limit of 3,126"):
        parse_legacy_binary(hostile, "hostile.bin")


def booster_pickle(handle: bytes) -> bytes:
    """A pickle as XGBoost 1.x writes a Booster (protocol 3): the class, an empty argument
    tuple, NEWOBJ, then its state dict {"handle": model bytes} by BUILD."""
    return (b"\x80\x03cxgboost.core\nBooster\n)\x81}X\x06\x00\x00\x00handleB" + struct.pack("<I", len(handle))
            + handle + b"sb.")


def test_the_pickle_helper_writes_what_the_unpickler_reads():
    assert unpickle_booster_state(booster_pickle(b"binf-model"))["handle"] == b"binf-model"


@pytest.mark.parametrize("raw, message", [
    (b"\x80\x04" + b"]" * 3000 + b"a" * 2999 + b".", "stacks objects more than 2,000 deep"),      # 3,000 nested lists
    (b"\x80\x02" + b"(" * 3000 + b"l" * 3000 + b".", "stacks objects more than 2,000 deep"),      # by marks
    (b"\x80\x04](" + (b"\x8c\x00" * 1000 + b"e(") * 1100 + b"e.", "more than 1,000,000 opcodes"),  # 1.1 M strings
])
def test_pickles_that_would_build_masses_of_objects_are_refused_before_unpickling(raw, message):
    # a few bytes of pickle make a nested list or an empty string of ~50 bytes each: 3 million
    # nested lists from 9 MB cost 340 MB before the unpickler found they were no Booster
    from model_core.errors import FormatError

    with pytest.raises(FormatError, match=f"{message}.*refused before unpickling"):
        unpickle_booster_state(raw, "hostile.pkl")


@pytest.mark.parametrize("handle, message", [
    (b'{"Config": {}, "Model": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested 100001 levels deep"),
    (json.dumps({"Config": {}, "Model": {"learner": {"learner_model_param": {"num_class": "1000000000"}}}}).encode(),
     "claims num_class = 1000000000"),
    (b"{i\x06ConfigL\x00\x00\x00\x00\x00\x00\x00\x00{}i\x05Model" + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "not a readable UBJSON model"),
])
def test_the_json_or_ubjson_model_a_pickled_booster_holds_is_bounded_too(tmp_path, handle, message):
    # XGBoost 1.3+ pickles a JSON/UBJSON snapshot: it was parsed (json.loads recursed past
    # Python's limit: RecursionError, no FormatError) and handed to XGBoost and Treelite unchecked
    from model_core.formats import FormatError, load_source

    path = tmp_path / "hostile.pkl"
    path.write_bytes(booster_pickle(handle))
    with pytest.raises(FormatError, match=f"the pickled Booster's model.*{message}"):
        load_source(path).to_booster()
