"""Shared fixtures: the plugin host, the bundled example model and the shared assets folder."""

from __future__ import annotations

from pathlib import Path

import pytest

import slimkit

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
STORIES = Path(__file__).resolve().parents[1] / "slimkit" / "examples" / "stories260K"


@pytest.fixture(scope="session")
def assets() -> Path:
    """``../shared/assets`` beside the repository; tests that need it skip when it is absent."""
    if not ASSETS.is_dir():
        pytest.skip(f"../shared/assets is absent: {ASSETS} does not exist")
    return ASSETS


@pytest.fixture
def host():
    """A fresh host with only the bundled plugins (installed entry points are not loaded)."""
    return slimkit.make_host(load_entrypoints=False)


@pytest.fixture(scope="session")
def stories() -> Path:
    """The bundled stories260K example folder (a 260K-parameter Llama)."""
    return STORIES
