"""The manifest: several libraries per artifact, and manifests written before targets still load."""
import json

from model_core.artifact import LIBRARY_NAME, MANIFEST_NAME, read_manifest

# Fields LibraryInfo gained with compile targets; a manifest written before them lacks them.
TARGET_FIELDS = ("target", "cpu", "verified_by", "max_abs_diff")


def test_a_manifest_from_before_targets_loads_with_one_native_library(compiled_small, tmp_path):
    _, manifest, folder = compiled_small
    data = json.loads((folder / MANIFEST_NAME).read_text())
    for key in TARGET_FIELDS:
        del data["library"][key]
    del data["other_libraries"]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    old = read_manifest(tmp_path)
    assert [lib.file for lib in old.libraries] == [LIBRARY_NAME]
    assert (old.library.target, old.library.cpu, old.library.verified_by) == ("", "", "native")
    assert old.library.sha256 == manifest.library.sha256 and old.library.platform == manifest.library.platform


def test_other_libraries_survive_the_json(compiled_small, tmp_path):
    _, manifest, folder = compiled_small
    data = json.loads((folder / MANIFEST_NAME).read_text())
    arm = {**data["library"], "file": "model-linux-aarch64.so", "platform": "linux_aarch64",
           "target": "linux-aarch64", "cpu": "neoverse-v1"}
    data["other_libraries"] = [arm]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    loaded = read_manifest(tmp_path)
    assert [lib.file for lib in loaded.libraries] == [LIBRARY_NAME, "model-linux-aarch64.so"]
    assert loaded.other_libraries[0].cpu == "neoverse-v1"
    assert json.loads(loaded.to_json())["other_libraries"] == [arm]
