"""`xgb-deploy upload` against the local S3."""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from model_compile.artifact import (
    LibraryInfo,
    Manifest,
    ModelInfo,
    Verification,
    sha256_file,
    write_tar_atomically,
)
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


def _compiled_artifact(folder: Path, library_bytes: bytes, manifest_sha: str) -> Path:
    folder.mkdir(parents=True)
    library = folder / "model.so"
    library.write_bytes(library_bytes)
    model = folder / "model.ubj"
    model.write_bytes(b"{}")
    manifest = Manifest(
        model=ModelInfo(file="model.ubj", source_format="ubjson", source_sha256="0" * 64,
                        objective="binary:logistic", num_feature=7, num_class=1, num_tree=50),
        library=LibraryInfo(file="model.so", sha256=manifest_sha, platform="linux_x86_64",
                            libc="glibc 2.36", compiler="gcc 12.2.0"),
        verification=Verification(reference="xgboost", rows=1000, max_abs_diff=1e-7, tolerance=1e-5),
        versions={}, crossover_batch_size=None, compile_seconds=1.0, created_at="2026-11-28T00:00:00Z")
    (folder / "manifest.json").write_text(manifest.to_json())
    archive = folder / "model.tar.gz"
    write_tar_atomically({"manifest.json": folder / "manifest.json", "model.so": library,
                          "model.ubj": model}, archive)
    return archive


def test_compiled_artifact_is_checked_against_its_manifest(aws, cli, tmp_path):
    good_bytes = b"\x7fELF pretend library"
    good = _compiled_artifact(tmp_path / "good", good_bytes, hashlib.sha256(good_bytes).hexdigest())
    status, _, err = cli("upload", good)
    assert status == 0, err
    assert "compiled binary:logistic model, 7 features, 50 trees" in err

    bad = _compiled_artifact(tmp_path / "bad", b"\x7fELF tampered", hashlib.sha256(good_bytes).hexdigest())
    status, _, err = cli("upload", bad)
    assert status == 1 and "does not match the sha256 in manifest.json" in err
    keys = aws.client("s3").list_objects_v2(Bucket=f"sagemaker-{REGION}-{ACCOUNT}").get("Contents", [])
    assert [k["Key"].split("/")[1] for k in keys] == ["good"]
