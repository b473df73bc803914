"""The deployable artifact: the only contract between the compiler and the server.

A deployable ``model.tar.gz`` holds, at its root (SageMaker extracts it into
``/opt/ml/model``):

* ``manifest.json`` - what :class:`Manifest` describes;
* ``model.so``      - the compiled library for the machine that compiled it, TL2cgen's or
  model_compile's kernel (name in ``manifest.library.file``, which one in
  ``manifest.library.generator``);
* ``model-linux-aarch64.so``, ... - libraries for further targets, when compiled for
  several (``manifest.other_libraries``); the server loads the one for its machine;
* ``model.ubj``     - the model re-saved as UBJSON, loadable by current XGBoost
  (name in ``manifest.model.file``): the stock predictor and the fallback.

This module also reads archives safely: a SageMaker ``model.tar.gz`` comes
from a user, so members with absolute paths, ``..``, links or devices are
refused, and so is an archive that would expand beyond a sane size.
"""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
LIBRARY_NAME = "model.so"
MODEL_NAME = "model.ubj"
# A model.tar.gz from S3 is at most a few hundred MB even for huge forests.
MAX_EXPANDED_BYTES = 2 * 1024**3
MAX_MEMBERS = 10_000


class ArtifactError(ValueError):
    """An archive or manifest that cannot be used; the message says why."""


@dataclass
class ModelInfo:
    file: str                       # UBJSON model, relative to the artifact root
    source_format: str              # json | ubjson | legacy_binary | pickle
    source_sha256: str              # of the model file the user gave
    objective: str
    num_feature: int
    num_class: int                  # 1 for binary and regression
    num_tree: int
    feature_names: list[str] | None = None
    base_score: list[float] | None = None


@dataclass
class LibraryInfo:
    file: str                       # shared library, relative to the artifact root
    sha256: str
    platform: str                   # e.g. linux_x86_64 (sysconfig.get_platform() style)
    libc: str                       # e.g. glibc 2.36
    compiler: str                   # e.g. gcc 12.2.0
    params: dict[str, Any] = field(default_factory=dict)   # TL2cgen export_lib params
    flags: list[str] = field(default_factory=list)          # C compiler flags
    # The batch function model_compile adds to every library (runtime.CompiledModel
    # calls it directly); None for a plain TL2cgen library.
    entry_point: str | None = None
    # Which code generator made the library: "tl2cgen" (also every manifest written
    # before there was a choice) or "kernel" (model_compile.codegen), and why:
    # {"reason": one line, "timings": [{"rows", "kernel_ms", "tl2cgen_ms"}]}.
    generator: str = "tl2cgen"
    generator_choice: dict[str, Any] = field(default_factory=dict)
    # The compile target (linux-x86_64, linux-aarch64); "" in manifests older than targets.
    target: str = ""
    cpu: str = ""                   # -mcpu tuning (neoverse-v1, ...); "" = the architecture's baseline
    # How this library was run for verification: "native" (loaded by the compiling
    # process) or "emulated: qemu-aarch64-static 7.2.19 on linux_x86_64".
    verified_by: str = "native"
    max_abs_diff: float | None = None   # this library's own difference on the verification rows


@dataclass
class Verification:
    reference: str                  # xgboost | gtil
    rows: int
    max_abs_diff: float
    tolerance: float
    worst_row: int | None = None
    # What the rows were: sample rows given by the user, rows generated around the splits.
    sample_rows: int = 0
    generated_rows: int = 0
    margin_max_abs_diff: float | None = None    # on raw margins, recorded, not gated
    # Each output passed when |difference| <= tolerance + relative_tolerance * |reference|
    # (relative_tolerance: trees per output x float32 epsilon, or the user's; 0 = absolute only).
    relative_tolerance: float = 0.0
    rule: str = ""

    def allowed(self, reference):
        """What each output (a float or numpy array) of ``reference`` may differ by."""
        return self.tolerance + self.relative_tolerance * abs(reference)


@dataclass
class Manifest:
    model: ModelInfo
    library: LibraryInfo
    verification: Verification
    versions: dict[str, str]        # treelite, tl2cgen, xgboost, numpy, python
    # Batch size at and above which stock XGBoost beat the compiled library on
    # the compiling machine; None when the compiled library won at every size tried.
    crossover_batch_size: int | None
    compile_seconds: float
    created_at: str
    schema_version: int = SCHEMA_VERSION
    # For a legacy binary or 1.x pickle: the converted model.ubj (XGBoost) against
    # Treelite's GTIL on the original model.
    conversion: Verification | None = None
    # The measurement behind crossover_batch_size: [{"rows", "compiled_ms", "xgboost_ms"}].
    crossover_timings: list[dict[str, Any]] = field(default_factory=list)
    compiled_on: dict[str, str] = field(default_factory=dict)   # platform, libc, cpu
    # Libraries for further targets (linux-aarch64 next to linux-x86_64, ...), each
    # verified on the same rows as ``library``; ``verification`` is the worst of all.
    other_libraries: list[LibraryInfo] = field(default_factory=list)

    @property
    def libraries(self) -> list[LibraryInfo]:
        """Every library of the artifact, ``library`` first."""
        return [self.library, *self.other_libraries]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        manifest = cls._from_dict(data)
        for name in (manifest.model.file, manifest.library.file):
            _check_inside(name)
        return manifest

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> "Manifest":
        try:
            version = data["schema_version"]
            if version != SCHEMA_VERSION:
                raise ArtifactError(f"manifest schema version {version} is not supported "
                                    f"(this build reads version {SCHEMA_VERSION})")
            return cls(
                model=ModelInfo(**data["model"]),
                library=LibraryInfo(**data["library"]),
                verification=Verification(**data["verification"]),
                versions=dict(data["versions"]),
                crossover_batch_size=data["crossover_batch_size"],
                compile_seconds=float(data["compile_seconds"]),
                created_at=str(data["created_at"]),
                schema_version=version,
                conversion=(Verification(**data["conversion"]) if data.get("conversion") else None),
                crossover_timings=list(data.get("crossover_timings") or []),
                compiled_on=dict(data.get("compiled_on") or {}),
                other_libraries=[LibraryInfo(**lib) for lib in data.get("other_libraries") or []],
            )
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"manifest is malformed: {exc}") from exc


def _check_inside(name: Any) -> None:
    """A file named by a manifest must be a relative path inside the artifact folder: the
    manifest is as untrusted as the archive it came in."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise ArtifactError(f"manifest names the file {name!r}: not a file name")
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or os.path.isabs(name) or ".." in parts:
        raise ArtifactError(f"manifest names the file {name!r}, outside the artifact folder")


def read_manifest(model_dir: Path) -> Manifest | None:
    """The manifest in an extracted artifact, or None where there is none (a bare model)."""
    path = Path(model_dir) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not readable JSON: {exc}") from exc
    return Manifest.from_dict(data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checked_members(tar: tarfile.TarFile, max_bytes: int) -> list[tarfile.TarInfo]:
    members = []
    total = 0
    for member in tar:
        if len(members) >= MAX_MEMBERS:
            raise ArtifactError(f"archive has more than {MAX_MEMBERS} members")
        name = member.name
        parts = Path(name).parts
        if name.startswith(("/", "\\")) or os.path.isabs(name) or ".." in parts:
            raise ArtifactError(f"archive member {name!r} has an absolute or parent path")
        if member.issym() or member.islnk():
            raise ArtifactError(f"archive member {name!r} is a link")
        if not (member.isfile() or member.isdir()):
            raise ArtifactError(f"archive member {name!r} is a device, FIFO or other special file")
        total += member.size
        if total > max_bytes:
            raise ArtifactError(f"archive expands beyond {max_bytes} bytes")
        members.append(member)
    return members


def safe_extract(archive: Path, dest: Path, max_bytes: int = MAX_EXPANDED_BYTES) -> list[str]:
    """Extract a (gzipped) tar into ``dest`` after checking every member; returns file names.

    Nothing is written unless every member passes the checks.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked_members(tar, max_bytes)
            dest.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):
                # The "data" filter re-checks paths and drops modes tarfile considers unsafe.
                tar.extractall(dest, members=members, filter="data")
            else:
                # No extraction filters (PEP 706) in Debian 12's Python 3.11.2, the serving
                # image's: the checks above already refused links, devices and escaping
                # paths; drop the archive's owners and unsafe mode bits here instead.
                for member in members:
                    member.mode = (member.mode & 0o755) | (0o700 if member.isdir() else 0o600)
                    member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArtifactError(f"{archive}: not a readable tar archive: {exc}") from exc
    return [m.name for m in members if m.isfile()]


def write_tar_atomically(files: dict[str, Path], archive: Path) -> None:
    """Write ``{name in archive: file}`` as a gzipped tar, under a temporary name
    then renamed, so that a failure never leaves a half-written archive."""
    archive = Path(archive)
    tmp = archive.with_name(f".{archive.name}.partial-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for name, path in files.items():
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)
        tmp.replace(archive)
    finally:
        tmp.unlink(missing_ok=True)
