"""Shared fixtures: real models where `anond models install` puts them ([models] dir's default),
real data from ../shared/data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anond.config import DEFAULT_MODELS_DIR

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = Path(os.environ.get("ANOND_TEST_MODELS", DEFAULT_MODELS_DIR))
DATA_DIR = Path(os.environ.get("ANOND_TEST_DATA", ROOT.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    if DATA_DIR.is_dir():
        return
    skip = pytest.mark.skip(reason=f"evaluation data not found at {DATA_DIR} (CI provides ../shared/data)")
    for item in items:
        if "data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def models_dir() -> Path:
    if not (MODELS_DIR / "installed.json").is_file():
        pytest.fail(f"models are not installed in {MODELS_DIR}: run `make setup` (anond models install)")
    return MODELS_DIR


@pytest.fixture(scope="session")
def settings(models_dir):
    from anond.config import load_settings

    return load_settings(None, models={"dir": models_dir})


@pytest.fixture(scope="session")
def engine(settings):
    """Real detectors, loaded once for the whole test session."""
    from anond.detect.engine import Engine

    return Engine.load(settings)


@pytest.fixture(scope="session")
def face_settings(models_dir):
    """The embedded defaults with faces only (the video and format tests' profile)."""
    from anond.config import load_settings

    return load_settings(None, models={"dir": models_dir}, profile={"targets": ["face"]})


@pytest.fixture(scope="session")
def face_engine(face_settings):
    from anond.detect.engine import Engine

    return Engine.load(face_settings, ["face"])


@pytest.fixture(scope="session")
def astronaut():
    """A real photo with one face, shipped inside scikit-image (BGR uint8)."""
    from skimage import data

    return data.astronaut()[:, :, ::-1].copy()


@pytest.fixture(scope="session", autouse=True)
def _anond_logging():
    """Events as the command line emits them (JSON lines on stderr), whichever test runs first;
    structlog's own default would print to stdout."""
    from anond import log

    log.configure("info", journald=False)
