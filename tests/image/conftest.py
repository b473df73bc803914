"""Fixtures of the image tests: one Docker engine and one build of each image per session.

Where Docker cannot be had, these tests fail in CI (CI=true) and skip elsewhere, with
the reason printed (a laptop without Docker, or without root to start one).
"""
from __future__ import annotations

import os

import pytest

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
                   f"{size / 1e6:.0f} MB, built in {seconds:.0f} s")
    return eng.RUNTIME_TAG


@pytest.fixture(scope="session")
def compile_image(engine) -> str:
    """The compile image (runtime + gcc), built once; returns its tag."""
    seconds = eng.build(engine, "compile", eng.COMPILE_TAG)
    size = eng.image_size_bytes(engine, eng.COMPILE_TAG)
    FIGURES.append(f"compile image {eng.COMPILE_TAG}: {size / 1e6:.0f} MB, built in {seconds:.0f} s")
    return eng.COMPILE_TAG
