"""Shared fixtures: the plugin host, the bundled example model, the shared assets folder, file
systems that refuse writes (a tmpfs mounted read-only or tiny, a folder made immutable), and the
toy exporters' host and CLI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

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


@pytest.fixture
def compress(host):
    """``compress(model, method, params, calibration=None)``: check and apply one compressor the
    way the runner does (same config validation and context), returning its summary."""

    def apply(model, method, params, calibration=None):
        info = host.compressors.get(method)
        config = host.config(info, params)
        ctx = host.context(calibration=calibration)
        compressor = info.create()
        compressor.check(model, host.adapter_for(model), config, ctx)
        return compressor.compress_(model, host.adapter_for(model), config, ctx)

    return apply


@pytest.fixture
def model():
    """A fresh copy of the bundled stories260K model (tests may change it)."""
    return slimkit.load_model("example:stories260K")


@pytest.fixture
def calibration(model):
    """Four seeded 64-token windows of the bundled TinyStories sample, for data-aware methods.
    (Test modules that need other sizes define their own ``calibration``.)"""
    from slimkit.core.data import TextSource, calibration_samples
    from slimkit.core.model_io import example_text

    return calibration_samples(model.tokenizer, TextSource(example_text()), n_samples=4, seq_len=64)


@pytest.fixture(scope="session")
def stories() -> Path:
    """The bundled stories260K example folder (a 260K-parameter Llama)."""
    return STORIES


@pytest.fixture(autouse=True, scope="session")
def _private_catalogue(tmp_path_factory):
    """Every test (and every slimkit subprocess a test starts) records into a throwaway
    catalogue, never into the user's own."""
    import os

    path = tmp_path_factory.mktemp("catalogue") / "catalogue.db"
    previous = os.environ.get("SLIMKIT_CATALOGUE")
    os.environ["SLIMKIT_CATALOGUE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("SLIMKIT_CATALOGUE", None)
    else:
        os.environ["SLIMKIT_CATALOGUE"] = previous


# -- catalogue backends: SQLite files and a throwaway PostgreSQL server ------------------------------
@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL server on 127.0.0.1 for the session (tests/backends.py). Skipped,
    saying why, where PostgreSQL or psycopg is missing, unless SLIMKIT_REQUIRE_POSTGRES is set (CI)."""
    import os

    import backends

    reason = backends.missing()
    if reason is not None:
        if os.environ.get(backends.REQUIRE_ENV):
            pytest.fail(f"{backends.REQUIRE_ENV} is set but {reason}")
        pytest.skip(reason)
    server = backends.Server()
    yield server
    server.stop()


@pytest.fixture
def pg_database(pg_server) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database (dropped after the test)."""
    with pg_server.database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def catalogue_url(request, tmp_path, monkeypatch) -> Iterator[str]:
    """A fresh catalogue on each backend: a SQLite file's path (created on first open), or a new
    PostgreSQL database created at the head revision (as ``slimkit db upgrade`` does for a team),
    with the managed artifacts in ``tmp_path/artifacts``."""
    if request.param == "sqlite":
        yield str(tmp_path / "catalogue.db")
        return
    from slimkit.core.catalogue import Catalogue

    monkeypatch.setenv("SLIMKIT_ARTIFACTS", str(tmp_path / "artifacts"))
    url = request.getfixturevalue("pg_database")
    Catalogue(url, upgrade=True).close()
    yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_catalogue_url(request, tmp_path, monkeypatch) -> Iterator[str]:
    """Where a catalogue can be created on each backend: a SQLite file's path (not yet there), or a
    new, empty PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "catalogue.db")
        return
    monkeypatch.setenv("SLIMKIT_ARTIFACTS", str(tmp_path / "artifacts"))
    yield request.getfixturevalue("pg_database")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_catalogue_url(request, tmp_path_factory) -> Iterator[str]:
    """``catalogue_url`` for a whole test module (a catalogue built once and read by many tests)."""
    import os

    folder = tmp_path_factory.mktemp("catalogue")
    if request.param == "sqlite":
        yield str(folder / "catalogue.db")
        return
    from slimkit.core.catalogue import Catalogue

    server = request.getfixturevalue("pg_server")
    previous = os.environ.get("SLIMKIT_ARTIFACTS")
    os.environ["SLIMKIT_ARTIFACTS"] = str(folder / "artifacts")
    try:
        with server.database() as url:
            Catalogue(url, upgrade=True).close()
            yield url
    finally:
        if previous is None:
            os.environ.pop("SLIMKIT_ARTIFACTS", None)
        else:
            os.environ["SLIMKIT_ARTIFACTS"] = previous


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The browser tests (tests/e2e) run in their own pytest process, only when named
    (``pytest tests/e2e``): Playwright's sync API and nbclient's event loop do not mix well in one
    process, and the plain ``pytest`` run stays browser-free."""
    if collection_path == Path(__file__).parent / "e2e":
        named = any("e2e" in Path(arg.split("::")[0]).parts for arg in config.args)
        return None if named else True
    return None


# -- file systems that refuse: shared by the failure tests of runs, saves and exports ----------------
@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """``mount_tmpfs(name, options)``: a tmpfs at ``tmp_path/name`` (skips where mounting is not
    allowed); unmounted after the test."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", str(target)], check=True)


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """``immutable(folder)``: ``chattr +i`` (nothing can be created in it, even by root);
    undone after the test. Skips where the file system or the user cannot."""
    marked: list[Path] = []

    def mark(folder: Path) -> None:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True) \
            if shutil.which("chattr") else None
        if done is None or done.returncode:
            pytest.skip(f"chattr +i is not available here: {done.stderr.strip() if done else 'no chattr'}")
        marked.append(folder)

    yield mark
    for folder in marked:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.fixture
def toys(register_plugin):
    """A host with the bundled plugins and the toy exporters of tests/export_toys.py (plugin 'acme-toys')."""
    import export_toys

    return register_plugin(export_toys, name="acme-toys")


@pytest.fixture
def toy_cli(toys, tmp_path):
    """``toy_cli(*args)``: the CLI on the ``toys`` host (click's runner), recording into a private
    catalogue file (``toy_cli.db``)."""
    from click.testing import CliRunner

    from slimkit.core.cli import make_cli

    db = tmp_path / "catalogue.db"

    def run(*args: str):
        return CliRunner().invoke(make_cli(toys), ["--catalogue", str(db), *args], catch_exceptions=False)

    run.db = db  # type: ignore[attr-defined]
    return run
