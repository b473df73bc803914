"""Fixtures of the image tests: one Docker engine and one build of each image per session.

Where Docker cannot be had, these tests fail in CI (CI=true) and skip elsewhere, with
the reason printed (a laptop without Docker, or without root to start one).
"""
from __future__ import annotations

import os
import time

import pytest

from model_core.artifact import safe_extract
from tests.image import engine as eng

# Figures measured during the session (sizes, build and start-up times), printed at its end.
FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("image figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def engine(tmp_path_factory) -> eng.Engine:
    try:
        return eng.provision(tmp_path_factory.mktemp("docker-config"))
    except eng.EngineUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"Docker is required in CI and could not be had: {exc}", pytrace=False)
        pytest.skip(f"no Docker engine: {exc}")


@pytest.fixture(scope="session")
def runtime_image(engine) -> str:
    """The serving image (the Dockerfile's default stage), built once; returns its tag."""
    seconds = eng.build(engine, "runtime", eng.RUNTIME_TAG)
    size = eng.image_size_bytes(engine, eng.RUNTIME_TAG)
    FIGURES.append(f"serving image {eng.RUNTIME_TAG} on {engine.base_image}: "
                   f"{size / 1e6:.0f} MB (build step {seconds:.0f} s; layers in Docker's cache are reused)")
    return eng.RUNTIME_TAG


@pytest.fixture(scope="session")
def compile_image(engine) -> str:
    """The compile image (runtime + gcc), built once; returns its tag."""
    seconds = eng.build(engine, "compile", eng.COMPILE_TAG)
    size = eng.image_size_bytes(engine, eng.COMPILE_TAG)
    FIGURES.append(f"compile image {eng.COMPILE_TAG}: {size / 1e6:.0f} MB (build step {seconds:.0f} s)")
    return eng.COMPILE_TAG


@pytest.fixture(scope="session")
def compiled_model(engine, compile_image, sample_model_dir, tmp_path_factory) -> dict:
    """rtb-small compiled by `model-compile` inside the compile image, as the README shows,
    and extracted as SageMaker would into a folder to mount at /opt/ml/model.

    Returns {"model_dir": extracted artifact, "source_dir": the sample model's folder
    (model.tar.gz, sample.csv), "archive": the deployable model.tar.gz}.
    """
    source_dir = sample_model_dir("rtb-small")
    out = tmp_path_factory.mktemp("compiled")
    started = time.perf_counter()
    engine.docker("run", "--rm", "--network", "host", "--user", f"{os.getuid()}:{os.getgid()}",
                  "-e", "HOME=/tmp", "-v", f"{source_dir}:/in:ro", "-v", f"{out}:/out",
                  compile_image, "model-compile", "/in/model.tar.gz", "-o", "/out/model.tar.gz",
                  "--sample-data", "/in/sample.csv", "--quiet")
    FIGURES.append(f"rtb-small compiled in the compile image in {time.perf_counter() - started:.1f} s")
    model_dir = tmp_path_factory.mktemp("opt-ml-model")
    safe_extract(out / "model.tar.gz", model_dir)
    # The serving image runs as uid 10001: the mounted folder must be readable by others,
    # as SageMaker's extracted /opt/ml/model is.
    model_dir.chmod(0o755)
    return {"model_dir": model_dir, "source_dir": source_dir, "archive": out / "model.tar.gz"}
