"""`xgb-deploy upload` against the local S3."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from model_core.artifact import safe_extract, sha256_file, write_tar_atomically
from tests.deploy.conftest import ACCOUNT, REGION


def test_upload_puts_the_archive_in_the_default_bucket_with_its_sha256(aws, cli, sample_archive):
    status, out, err = cli("upload", sample_archive)
    assert status == 0, err
    sha = sha256_file(sample_archive)
    bucket = f"sagemaker-{REGION}-{ACCOUNT}"          # the SageMaker SDK's default bucket name
    key = f"xgb-neo-serve/rtb-small/{sha[:16]}/model.tar.gz"
    assert out.strip() == f"s3://{bucket}/{key}"
    s3 = aws.client("s3")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["sha256"] == sha
    assert head["ContentLength"] == sample_archive.stat().st_size
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == sample_archive.read_bytes()
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    assert "no manifest.json" in err           # a bare SageMaker XGBoost model, said so


def test_same_archive_again_is_not_uploaded_twice(aws, cli, sample_archive):
    assert cli("upload", sample_archive)[0] == 0
    status, out, err = cli("upload", "--prefix", "xgb-neo-serve", sample_archive)
    assert status == 0
    assert "already uploaded" in err
    assert out.strip().endswith("/model.tar.gz")
    listing = aws.client("s3").list_objects_v2(Bucket=f"sagemaker-{REGION}-{ACCOUNT}")
    assert listing["KeyCount"] == 1


def test_named_bucket_must_exist(aws, cli, sample_archive):
    status, out, err = cli("upload", "--bucket", "no-such-bucket-here", sample_archive)
    assert status == 1
    assert "s3://no-such-bucket-here does not exist" in err
    assert out == ""
    assert aws.client("s3").list_buckets()["Buckets"] == []    # nothing was created


def test_named_bucket_and_prefix_are_used(aws, cli, sample_archive):
    aws.client("s3").create_bucket(Bucket="team-models")
    status, out, _ = cli("upload", "--bucket", "team-models", "--prefix", "bidding/filters", sample_archive)
    assert status == 0
    assert out.startswith("s3://team-models/bidding/filters/rtb-small/")


def test_the_key_is_named_after_the_archive(aws, cli, sample_archive, tmp_path):
    named = tmp_path / "rtb-small-v2.tar.gz"
    named.write_bytes(sample_archive.read_bytes())
    status, out, _ = cli("upload", named)
    assert status == 0
    assert f"/xgb-neo-serve/rtb-small-v2/{sha256_file(named)[:16]}/model.tar.gz" in out


def test_unsafe_or_broken_archives_are_refused_before_any_upload(aws, cli, tmp_path):
    not_tar = tmp_path / "model.tar.gz"
    not_tar.write_bytes(b"this is no archive")
    status, _, err = cli("upload", not_tar)
    assert status == 1 and "not a readable tar archive" in err

    evil = tmp_path / "evil" / "model.tar.gz"
    evil.parent.mkdir()
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    status, _, err = cli("upload", evil)
    assert status == 1 and "parent path" in err

    status, _, err = cli("upload", tmp_path / "missing.tar.gz")
    assert status == 1 and "no such file" in err
    assert aws.client("s3").list_buckets()["Buckets"] == []


def test_compiled_artifact_is_checked_against_its_manifest(aws, cli, compiled_archive, tmp_path):
    status, out, err = cli("upload", compiled_archive)
    assert status == 0, err
    assert "compiled binary:logistic model, 7 features, 50 trees, model.so for linux_x86_64" in err
    assert out.strip().endswith(f"/rtb-small/{sha256_file(compiled_archive)[:16]}/model.tar.gz")

    # The same artifact with its library changed after compiling: refused, nothing uploaded.
    files = tmp_path / "files"
    names = safe_extract(compiled_archive, files)
    library = files / "model.so"
    library.write_bytes(library.read_bytes() + b"tampered")
    tampered = tmp_path / "tampered" / "model.tar.gz"
    tampered.parent.mkdir()
    write_tar_atomically({name: files / name for name in names}, tampered)
    status, _, err = cli("upload", tampered)
    assert status == 1 and "model.so does not match the sha256 in manifest.json" in err
    keys = aws.client("s3").list_objects_v2(Bucket=f"sagemaker-{REGION}-{ACCOUNT}")["Contents"]
    assert [k["Key"].split("/")[1] for k in keys] == ["rtb-small"]


def hostile_tar(path: Path, name: str, **fields) -> Path:
    """``xgboost-model`` (a few honest bytes) beside one hostile member."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("xgboost-model")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"{}"))
        bad = tarfile.TarInfo(name)
        for key, value in fields.items():
            setattr(bad, key, value)
        data = b"x" * bad.size if bad.type == tarfile.REGTYPE and bad.size < 1 << 20 else None
        tar.addfile(bad, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize("name, fields, message", [
    ("/etc/cron.d/evil", {"size": 1}, "absolute or parent path"),
    ("link", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "is a link"),
    ("hard", {"type": tarfile.LNKTYPE, "linkname": "xgboost-model"}, "is a link"),
    ("dev", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, "device"),
    ("fifo", {"type": tarfile.FIFOTYPE}, "device, FIFO"),
])
def test_hostile_archives_are_refused_and_nothing_is_uploaded(aws, cli, tmp_path, name, fields, message):
    archive = hostile_tar(tmp_path / "hostile" / "model.tar.gz", name, **fields)
    status, out, err = cli("upload", archive)
    assert status == 1 and message in err and out == ""
    assert aws.client("s3").list_buckets()["Buckets"] == []       # not even the default bucket


def test_a_member_claiming_a_terabyte_is_refused_before_any_upload(aws, cli, tmp_path):
    # a header claiming 1 TB with no data behind it (a sparse file's size, or a lie): the
    # real 2 GB limit, counted from the headers before a byte is extracted
    with tarfile.open(tmp_path / "sparse.tar", "w") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = 1 << 40
        tar.addfile(info)
    status, _, err = cli("upload", tmp_path / "sparse.tar")
    assert status == 1 and ("expands beyond" in err or "not a readable tar" in err)
    assert aws.client("s3").list_buckets()["Buckets"] == []


@pytest.mark.parametrize("library", ["../model.so", "/usr/lib/evil.so"])
def test_a_manifest_naming_a_file_outside_the_artifact_is_refused(aws, cli, compiled_archive, tmp_path, library):
    files = tmp_path / "files"
    names = safe_extract(compiled_archive, files)
    manifest = json.loads((files / "manifest.json").read_text())
    manifest["library"]["file"] = library
    (files / "manifest.json").write_text(json.dumps(manifest))
    hostile = tmp_path / "hostile" / "model.tar.gz"
    hostile.parent.mkdir()
    write_tar_atomically({name: files / name for name in names}, hostile)
    status, out, err = cli("upload", hostile)
    assert status == 1 and "manifest names the file" in err and out == ""
    assert aws.client("s3").list_buckets()["Buckets"] == []
