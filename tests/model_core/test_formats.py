"""Reading a user's model: formats from the bytes, archives and folders safely."""
import io
import tarfile

import numpy as np
import pytest

from model_core.formats import FormatError, detect_format, load_source


def write_tar(path, members):
    """members: [(TarInfo, bytes or None)]"""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def file_member(name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("head, fmt", [
    (b'{"learner": {', "json"), (b'  \n{ "version"', "json"), (b"{L\x00\x00\x00\x00\x00\x00\x00\x07learner", "ubjson"),
    (b"{i\x07learner{", "ubjson"), (b"binf\x00\x00\x00?", "legacy_binary"), (b"\x80\x04\x95\x10\x00", "pickle"),
    (b"\x80\x02cxgboost.core\nBooster", "pickle"), (b"PK\x03\x04", None), (b"", None), (b"hello", None),
])
def test_detect_format_from_bytes(head, fmt):
    assert detect_format(head) == fmt


def test_format_comes_from_bytes_not_name(tmp_path, small_model_file):
    ubj, _ = small_model_file("binary:logistic")
    js, _ = small_model_file("binary:logistic", fmt="json")
    misnamed = tmp_path / "model.json"
    misnamed.write_bytes(ubj.read_bytes())
    assert load_source(misnamed).format == "ubjson"
    assert load_source(js).format == "json"


def test_sagemaker_tarball_and_folder(tmp_path, sample_model_dir):
    tarball = sample_model_dir("rtb-small") / "model.tar.gz"
    source = load_source(tarball)
    assert source.format == "ubjson" and source.origin.endswith(":xgboost-model")
    with tarfile.open(tarball) as tar:
        raw = tar.extractfile("xgboost-model").read()
        tar.extractall(tmp_path / "folder", filter="data")
    assert source.raw == raw
    assert load_source(tmp_path / "folder").sha256 == source.sha256
    booster = source.to_booster()
    assert booster.num_features() == 7 and booster.num_boosted_rounds() == 50


def test_folder_with_one_model_file_of_any_name(tmp_path, small_model_file):
    path, _ = small_model_file("reg:squarederror")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "my-model.bin").write_bytes(path.read_bytes())
    assert load_source(tmp_path).origin.endswith("my-model.bin")


def test_folder_with_two_models_asks_which(tmp_path, small_model_file):
    path, _ = small_model_file("reg:squarederror")
    (tmp_path / "a.ubj").write_bytes(path.read_bytes())
    (tmp_path / "b.ubj").write_bytes(path.read_bytes())
    with pytest.raises(FormatError, match="several model files"):
        load_source(tmp_path)


def test_not_a_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "xgboost-model"
    bad.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(FormatError, match="not an XGBoost model"):
        load_source(bad)
    with pytest.raises(FileNotFoundError):
        load_source(tmp_path / "missing")
    truncated = tmp_path / "truncated.ubj"
    truncated.write_bytes(b"{L\x00\x00\x00\x00\x00\x00\x00\x07lea")
    with pytest.raises(FormatError, match="not a readable UBJSON model: truncated"):   # before XGBoost sees it
        load_source(truncated).to_booster()


def test_path_traversal_archive_is_refused_and_writes_nothing(tmp_path, small_model_file):
    path, _ = small_model_file("binary:logistic")
    evil = tmp_path / "evil.tar.gz"
    write_tar(evil, [file_member("xgboost-model", path.read_bytes()),
                     file_member("../../escaped.txt", b"owned")])
    with pytest.raises(FormatError, match="parent path"):
        load_source(evil)
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert not list(tmp_path.parent.parent.glob("escaped.txt"))


@pytest.mark.parametrize("kind", ["absolute", "symlink", "hardlink", "device"])
def test_unsafe_members_are_refused(tmp_path, kind):
    info = tarfile.TarInfo("xgboost-model")
    if kind == "absolute":
        info.name = "/etc/passwd-copy"
    elif kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
    else:
        info.type = tarfile.CHRTYPE
    archive = tmp_path / "bad.tar.gz"
    write_tar(archive, [(info, None)])
    with pytest.raises(FormatError, match="absolute|link|device"):
        load_source(archive)


def test_archive_that_expands_too_far_is_refused(tmp_path, monkeypatch):
    import model_core.artifact as artifact

    archive = tmp_path / "big.tar.gz"
    write_tar(archive, [file_member("xgboost-model", b"\0" * 4096)])
    monkeypatch.setattr(artifact, "MAX_EXPANDED_BYTES", 1024)
    monkeypatch.setattr(artifact.safe_extract, "__defaults__", (1024,))
    with pytest.raises(FormatError, match="expands beyond"):
        load_source(archive)


def test_treelite_and_xgboost_views_agree(small_model_file):
    import treelite

    path, X = small_model_file("binary:logistic")
    source = load_source(path)
    booster, tl_model = source.to_booster(), source.to_treelite()
    gtil = treelite.gtil.predict(tl_model, X).reshape(-1)
    assert np.abs(gtil - booster.inplace_predict(X)).max() < 1e-6
    assert source.to_ubjson() == path.read_bytes()
