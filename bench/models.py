"""The models under test: a sample model, built, compiled in each variant, extracted, cached.

For a sample model (``sample_models``) this makes, under ``<root>/<name>/``:

* ``stock/``: the training output extracted as SageMaker extracts it (``xgboost-model``),
  what the stock container and the stock-equivalent baseline serve;
* ``<variant>/model.tar.gz`` and ``<variant>/model/``: the deployable artifact that
  ``model_compile.compile_artifact`` writes, and its extraction, for each compile variant:
  ``plain`` (TL2cgen, no quantization, no branch annotation), ``annotated`` (TL2cgen, branch
  annotation from the sample rows), ``quantized`` (compile_artifact's defaults, what is
  deployed: both generators built and verified, the faster shipped), and each generator
  alone, ``tl2cgen`` (quantized) and ``kernel`` (model_compile.codegen), side by side.

A variant is compiled again only when the source model, its options or model_compile's
code changed (``stamp.json``), so that a second benchmark run starts in seconds.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from model_core.artifact import safe_extract, sha256_file

VARIANTS: dict[str, dict] = {
    "plain": {"quantize": False, "annotate": False, "generator": "tl2cgen"},
    "annotated": {"quantize": False, "annotate": True, "generator": "tl2cgen"},
    "quantized": {"quantize": True, "annotate": False},
    "tl2cgen": {"generator": "tl2cgen"},
    "kernel": {"generator": "kernel"},
}
DEPLOYED_VARIANT = "quantized"          # compile_artifact's defaults
DEFAULT_ROOT = Path("artifacts/bench")


@dataclass
class ModelUnderTest:
    name: str
    source: Path                         # the sample model.tar.gz (SageMaker training output)
    sample_csv: Path                     # request rows, no header
    stock_dir: Path                      # extracted training output: xgboost-model
    variants: dict[str, Path] = field(default_factory=dict)   # variant -> extracted artifact folder

    @property
    def deployed(self) -> Path:
        """The folder of the variant that is deployed (compile_artifact's defaults)."""
        return self.variants[DEPLOYED_VARIANT]


def _compiler_fingerprint() -> str:
    """A digest of the compiler's source (model_compile and the model_core it reads models
    with): a changed compiler invalidates the cache."""
    import hashlib

    import model_compile
    import model_core

    digest = hashlib.sha256()
    for package in (Path(model_compile.__file__).parent, Path(model_core.__file__).parent):
        for path in sorted(package.glob("*.py")) + sorted(package.glob("*.c")):
            digest.update(package.name.encode() + b"/" + path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _stamp(source: Path, options: dict) -> dict:
    return {"source_sha256": sha256_file(source), "options": options, "compiler": _compiler_fingerprint()}


def compile_variant(source: Path, sample_csv: Path, folder: Path, options: dict,
                    progress: Callable[[str], None] = print) -> Path:
    """Compile ``source`` with ``options`` into ``folder`` unless the stamp there matches;
    returns the extracted artifact folder (``folder/model``)."""
    from model_compile import compile_artifact

    stamp_path, archive, extracted = folder / "stamp.json", folder / "model.tar.gz", folder / "model"
    wanted = _stamp(source, options)
    if archive.exists() and extracted.is_dir() and stamp_path.exists() \
            and json.loads(stamp_path.read_text()) == wanted:
        return extracted
    folder.mkdir(parents=True, exist_ok=True)
    stamp_path.unlink(missing_ok=True)
    compile_artifact(source, archive, sample_data=sample_csv, progress=lambda line: progress(f"    {line}"),
                     **options)
    shutil.rmtree(extracted, ignore_errors=True)
    safe_extract(archive, extracted)
    stamp_path.write_text(json.dumps(wanted))
    return extracted


def prepare_model(name: str, root: Path = DEFAULT_ROOT, variants: tuple[str, ...] = tuple(VARIANTS),
                  samples_root: Path | None = None, progress: Callable[[str], None] = print) -> ModelUnderTest:
    """Build (or reuse) sample model ``name`` and compile the ``variants`` of it."""
    from sample_models.build import DEFAULT_OUT, build

    samples_root = Path(samples_root or DEFAULT_OUT)
    build(name, samples_root)
    sample_dir = samples_root / name
    model = ModelUnderTest(name=name, source=sample_dir / "model.tar.gz", sample_csv=sample_dir / "sample.csv",
                           stock_dir=Path(root) / name / "stock")
    if not (model.stock_dir / "xgboost-model").exists():
        safe_extract(model.source, model.stock_dir)
    for variant in variants:
        progress(f"  {name}: compile variant {variant} ({VARIANTS[variant]})")
        model.variants[variant] = compile_variant(model.source, model.sample_csv, Path(root) / name / variant,
                                                  VARIANTS[variant], progress)
    return model
