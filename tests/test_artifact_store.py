"""The shared artifact store: two catalogues on one store folder, a real S3-compatible server
(moto) on loopback, an fsspec ``memory://`` store, and the bad inputs (a tampered file, a
read-only, full or unreachable store), each one line, a non-zero exit and nothing half-written.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import signal
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner, Result

from backends import free_port

from slimkit.core.artifact_store import ChecksumError, open_store
from slimkit.core.artifact_store.access import publish_result
from slimkit.core.catalogue import Catalogue
from slimkit.core.catalogue.artifacts import MANIFEST_FILE, REFS_FOLDER
from slimkit.core.cli import make_cli
from slimkit.core.model_io import load_model
from slimkit.testing import one_line_error

REQUIRE_S3 = "SLIMKIT_REQUIRE_S3"  # CI sets it: s3fs or moto_server missing fails instead of skipping
RECIPE = "name: half\nsteps:\n  - method: prune.unstructured\n    params: {sparsity: 0.5}\n"


def invoke(host: Any, *args: str) -> Result:
    return CliRunner().invoke(make_cli(host), list(args), catch_exceptions=False)


def slimkit_process(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Another machine of the team: a separate process with its own environment."""
    return subprocess.run([sys.executable, "-m", "slimkit", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SLIMKIT_LOAD_PLUGINS": "", **env})


def need_s3(*, server: bool) -> str | None:
    """``moto_server``'s path (when ``server``); skips (fails under CI) when s3fs or moto is missing."""
    import importlib.util

    found = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    reason = "s3fs is not installed (pip install 'slimkit[s3]')" if importlib.util.find_spec("s3fs") is None \
        else "moto_server is not installed (pip install 'moto[server]')" if server and found is None else None
    if reason is not None:
        if os.environ.get(REQUIRE_S3):
            pytest.fail(f"{REQUIRE_S3} is set but {reason}")
        pytest.skip(reason)
    return found


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "half.yaml"
    path.write_text(RECIPE)
    return path


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One store folder (a shared mount, say) for every catalogue of the test."""
    folder = tmp_path / "team-store"
    monkeypatch.setenv("SLIMKIT_ARTIFACTS", str(folder))
    return folder


def run_without_out(host: Any, catalogue: str, recipe: Path, *more: str) -> tuple[str, Path]:
    """``slimkit run`` with no --out: the model goes to the store; its id and reported folder."""
    result = invoke(host, "--catalogue", catalogue, "run", str(recipe), "-m", "example:stories260K", "--json",
                    "--no-progress", *more)
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.stdout)
    return report["content_id"], Path(report["output"])


# -- a folder shared by two catalogues -----------------------------------------------------------
def test_two_catalogues_share_one_store_folder(catalogue_url, host, store, recipe, tmp_path):
    """A (SQLite or PostgreSQL; `store` after `catalogue_url`, which sets its own) publishes; B (its
    own SQLite file) opens, pulls, and keeps the
    model alive in gc for as long as either refers to it."""
    a, b = catalogue_url, str(tmp_path / "b.db")
    model_id, folder = run_without_out(host, a, recipe, "--name", "half")
    hex_id = model_id.partition(":")[2]
    assert folder == store / hex_id and (folder / MANIFEST_FILE).is_file()
    with Catalogue(a) as cat:
        assert cat.resolve("half").location == str(folder)
    assert [p.name for p in store.iterdir() if not p.name.startswith(".")] == [hex_id]

    # B has no row for it: it finds the model by id prefix in the store, opens and pulls it
    evaluated = invoke(host, "--catalogue", b, "eval", hex_id[:10], "--metric", "size", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    pulled = invoke(host, "--catalogue", b, "pull", hex_id[:10], "--to", str(tmp_path / "pulled"))
    assert pulled.exit_code == 0, pulled.output
    assert f"into {tmp_path / 'pulled'}" in pulled.stdout
    assert not filecmp.dircmp(folder, tmp_path / "pulled").diff_files
    assert sorted(p.name for p in (tmp_path / "pulled").iterdir()) == sorted(p.name for p in folder.iterdir())

    # B refers to nothing: its gc leaves A's model alone, however old
    assert invoke(host, "--catalogue", b, "gc", "--grace", "0").exit_code == 0
    assert (folder / MANIFEST_FILE).is_file()
    # B makes the same model: one artifact, two markers
    b_id, b_folder = run_without_out(host, b, recipe)
    assert (b_id, b_folder) == (model_id, folder)
    assert len(os.listdir(store / REFS_FOLDER / hex_id)) == 2
    # A forgets it: still kept, B refers to it
    assert invoke(host, "--catalogue", a, "delete", "half", "--yes").exit_code == 0
    assert invoke(host, "--catalogue", a, "gc", "--grace", "0").exit_code == 0
    assert (folder / MANIFEST_FILE).is_file() and len(os.listdir(store / REFS_FOLDER / hex_id)) == 1
    # B forgets it too: within the grace period it stays, after it the model goes
    assert invoke(host, "--catalogue", b, "delete", hex_id[:10], "--yes").exit_code == 0
    young = invoke(host, "--catalogue", b, "gc")
    assert "1 unreferenced but younger than 3600 s" in young.stdout and folder.is_dir()
    gone = invoke(host, "--catalogue", b, "gc", "--grace", "0")
    assert f"removed model {hex_id[:12]}" in gone.stdout, gone.output
    assert not folder.exists() and tree(store) == [REFS_FOLDER]  # no model, no marker left


def test_a_model_saved_with_out_is_shared_by_publish(host, store, recipe, tmp_path):
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    out = tmp_path / "mine"
    made = invoke(host, "--catalogue", a, "run", str(recipe), "-m", "example:stories260K", "--out", str(out),
                  "--name", "half", "--json", "--no-progress")
    assert made.exit_code == 0, made.output
    import json

    hex_id = json.loads(made.stdout)["content_id"].partition(":")[2]
    assert not store.exists() or hex_id not in os.listdir(store)  # --out: the folder given, nothing else
    one_line_error(invoke(host, "--catalogue", b, "pull", hex_id[:10]), f"no model with id or name '{hex_id[:10]}'")
    published = invoke(host, "--catalogue", a, "publish", "half")
    assert published.exit_code == 0 and f"published half to {store / hex_id}" in published.stdout, published.output
    assert "in the artifact store already" in invoke(host, "--catalogue", a, "publish", "half").stdout
    with Catalogue(a) as cat:
        assert cat.resolve("half").location == str(out.resolve())  # the row keeps its folder
    pulled = invoke(host, "--catalogue", b, "pull", hex_id[:10])
    assert pulled.exit_code == 0 and f"into {store / hex_id}" in pulled.stdout, pulled.output
    shutil.rmtree(out)  # this machine's folder is gone: the store's copy is opened instead
    assert invoke(host, "--catalogue", a, "eval", "half", "--metric", "size").exit_code == 0


def test_identical_model_from_elsewhere_is_published_once(host, store, recipe, tmp_path):
    """A result saved outside the store is copied in beside its final name, then renamed."""
    with Catalogue(str(tmp_path / "a.db")) as cat:
        loaded = load_model("example:stories260K")
        source = tmp_path / "made-elsewhere"
        shutil.copytree(loaded.path, source)
        local, location = publish_result(cat, source, "sha256:" + "ab" * 32, "copied")
        assert local == store / ("ab" * 32) and location == str(local) and not source.exists()
        again = tmp_path / "again"
        shutil.copytree(local, again)
        assert publish_result(cat, again, "sha256:" + "ab" * 32, "copied")[0] == local and not again.exists()
    assert sorted(p.name for p in store.iterdir()) == [REFS_FOLDER, "ab" * 32]


def test_gc_removes_what_killed_runs_left_only_after_the_grace_period(host, store, recipe, tmp_path):
    db = str(tmp_path / "a.db")
    model_id, folder = run_without_out(host, db, recipe)
    old, young = store / ".incoming-half-0badc0de", store / ".incoming-half-5ca1ab1e"
    checkpoints = store / ".work" / ("7" * 32)
    for made in (old, young, checkpoints):
        made.mkdir(parents=True)
        (made / "model.safetensors").write_bytes(b"half-written")
    stale = time.time() - 7200
    for path in (old, old / "model.safetensors", checkpoints, checkpoints / "model.safetensors"):
        os.utime(path, (stale, stale))
    dry = invoke(host, "--catalogue", db, "gc", "--dry-run")
    assert "would remove .incoming-half-0badc0de" in dry.stdout and old.is_dir(), dry.output
    report = invoke(host, "--catalogue", db, "gc")
    assert report.exit_code == 0, report.output
    assert not old.exists() and not checkpoints.exists() and young.is_dir() and (folder / MANIFEST_FILE).is_file()
    assert "kept 1 referenced" in report.stdout


def test_a_stored_model_without_its_manifest_is_refused(host, store, recipe, tmp_path):
    db = str(tmp_path / "a.db")
    _, folder = run_without_out(host, db, recipe, "--name", "half")
    (folder / MANIFEST_FILE).unlink()
    one_line_error(invoke(host, "--catalogue", db, "eval", "half", "--metric", "size"),
                   f"model half in the artifact store {store}: its manifest {MANIFEST_FILE} is missing")


def test_a_store_url_nothing_opens_is_one_line(host, recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMKIT_ARTIFACTS", "nosuch://bucket/models")
    result = invoke(host, "--catalogue", str(tmp_path / "a.db"), "run", str(recipe), "-m", "example:stories260K")
    one_line_error(result, "artifact store nosuch://bucket/models: ", "nosuch")


# -- bad input -------------------------------------------------------------------------------------
def test_a_tampered_file_is_one_line_and_nothing_is_copied(host, store, recipe, tmp_path):
    db = str(tmp_path / "a.db")
    model_id, folder = run_without_out(host, db, recipe, "--name", "half")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one bit pattern changed: only the sha256 tells
    weights.write_bytes(bytes(data))
    one_line_error(invoke(host, "--catalogue", db, "eval", "half", "--metric", "size"),
                   "model half", "model.safetensors does not match its checksum")
    target = tmp_path / "pulled"
    one_line_error(invoke(host, "--catalogue", db, "pull", "half", "--to", str(target)),
                   "model.safetensors does not match its checksum")
    assert tree(tmp_path / "pulled") == [] and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_a_read_only_store_is_refused_before_any_work(host, recipe, tmp_path, mount_tmpfs, monkeypatch):
    folder = mount_tmpfs("readonly-store", "size=4m")
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    monkeypatch.setenv("SLIMKIT_ARTIFACTS", str(folder))
    db = str(tmp_path / "a.db")
    started = time.perf_counter()
    result = invoke(host, "--catalogue", db, "run", str(recipe), "-m", "example:stories260K", "--no-progress")
    one_line_error(result, f"artifact store {folder} is not writable", "Read-only file system (EROFS)")
    assert time.perf_counter() - started < 10
    with Catalogue(db) as cat:  # refused before the run started: no run, no step
        assert cat.runs() == [] and cat.models() == []


def test_a_full_store_is_refused_before_work(host, recipe, tmp_path, mount_tmpfs, monkeypatch):
    folder = mount_tmpfs("small-store", "size=256k")
    monkeypatch.setenv("SLIMKIT_ARTIFACTS", str(folder))
    db = str(tmp_path / "a.db")
    result = invoke(host, "--catalogue", db, "run", str(recipe), "-m", "example:stories260K", "--no-progress")
    one_line_error(result, "not enough free space for the result", str(folder))
    assert tree(folder) == []
    with Catalogue(db) as cat:
        assert cat.models() == [] and [run.status for run in cat.runs()] == ["failed"]


def test_a_store_that_fills_while_saving_keeps_nothing(recipe, tmp_path):
    """RLIMIT_FSIZE (EFBIG, like a disk filling while the model is written): one line, and the
    store holds no half-written model and no marker; the run is recorded failed."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    store, db = tmp_path / "store", tmp_path / "a.db"
    Catalogue(str(db)).close()
    result = subprocess.run([sys.executable, "-m", "slimkit", "--catalogue", str(db), "--artifacts", str(store),
                             "run", str(recipe), "-m", "example:stories260K", "--no-progress"],
                            capture_output=True, text=True, timeout=300, preexec_fn=limit,
                            env={**os.environ, "SLIMKIT_LOAD_PLUGINS": ""})
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot save the model to {store}/.incoming-half-") and "(EFBIG)" in line, line
    assert tree(store) == []
    with Catalogue(str(db)) as cat:
        assert cat.models() == [] and [run.status for run in cat.runs()] == ["failed"]


# -- fsspec: memory:// here, S3 on a loopback moto server below ------------------------------------
def test_an_fsspec_store_commits_with_its_manifest_and_verifies_every_download(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMKIT_ARTIFACT_CACHE", str(tmp_path / "cache-a"))
    url = f"memory://slimkit-test-{os.getpid()}-{time.time_ns()}"
    store = open_store(url)
    model = tmp_path / "model"
    shutil.copytree(load_model("example:stories260K").path, model)
    model_id = "sha256:" + "cd" * 32
    assert not store.has(model_id) and store.ids() == []
    local = store.publish(model, model_id, "token-a", "m")
    assert local == tmp_path / "cache-a" / local.parent.name / ("cd" * 32) and not model.exists()
    assert store.ids() == ["cd" * 32] and store.refs(model_id) == ["token-a"]
    assert store.find("cdcdcd") == [model_id] and store.find("ab") == []
    monkeypatch.setenv("SLIMKIT_ARTIFACT_CACHE", str(tmp_path / "cache-b"))  # another machine
    other = open_store(url)
    fetched = other.open(model_id, "m")
    assert fetched.parent.parent == tmp_path / "cache-b" and not filecmp.dircmp(local, fetched).diff_files
    # a damaged object: the download is refused and leaves nothing in the cache
    manifest = other.manifest(model_id)
    assert manifest is not None and manifest.folder
    other.fs.pipe_file(f"{other.root}/{'cd' * 32}/{manifest.folder}/config.json", b"{}")
    shutil.rmtree(fetched)
    with pytest.raises(ChecksumError, match="model m in the artifact store memory:.*: file config.json has 2 bytes"):
        other.open(model_id, "m")
    assert tree(tmp_path / "cache-b") == [fetched.parent.name]
    # removal: not while a marker is there; the manifest goes first, then the files
    assert other.remove(model_id) is False and other.has(model_id)
    other.drop_ref(model_id, "token-a")
    assert other.remove(model_id) is True and other.ids() == [] and other.fs.ls(other.root) == []


@pytest.fixture(scope="module")
def s3_server() -> Iterator[dict[str, str]]:
    """A moto S3 server on loopback (a real HTTP server in a subprocess), with bucket ``team``;
    yields the environment a client needs."""
    server = need_s3(server=True)
    assert server is not None
    port = free_port()
    process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("moto_server did not start")
                time.sleep(0.2)
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket="team")
        yield env
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_s3_store_publish_on_one_machine_pull_on_another(s3_server, recipe, tmp_path, monkeypatch):
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    url = f"s3://team/models-{time.time_ns()}"
    a = {"SLIMKIT_ARTIFACTS": url, "SLIMKIT_ARTIFACT_CACHE": str(tmp_path / "cache-a")}
    started = time.perf_counter()
    made = slimkit_process("--catalogue", str(tmp_path / "a.db"), "run", str(recipe), "-m", "example:stories260K",
                           "--json", "--no-progress", env=a)
    assert made.returncode == 0, made.stderr
    import json

    report = json.loads(made.stdout)
    hex_id = report["content_id"].partition(":")[2]
    local = Path(report["output"])
    assert local.parent.parent == tmp_path / "cache-a" and local.name == hex_id
    with Catalogue(str(tmp_path / "a.db")) as cat:
        assert cat.model(report["content_id"]).location == f"{url}/{hex_id}"
    publish_s = time.perf_counter() - started
    # another machine: its own catalogue and cache; the model by id prefix, every file checked
    b = {"SLIMKIT_ARTIFACTS": url, "SLIMKIT_ARTIFACT_CACHE": str(tmp_path / "cache-b")}
    started = time.perf_counter()
    pulled = slimkit_process("--catalogue", str(tmp_path / "b.db"), "pull", hex_id[:8], "--to",
                             str(tmp_path / "pulled"), env=b)
    assert pulled.returncode == 0, pulled.stderr
    pull_s = time.perf_counter() - started
    assert not filecmp.dircmp(local, tmp_path / "pulled").diff_files
    evaluated = slimkit_process("--catalogue", str(tmp_path / "a.db"), "eval", hex_id[:8], "--metric", "size",
                                env={**b, "SLIMKIT_ARTIFACT_CACHE": str(tmp_path / "cache-c")})
    assert evaluated.returncode == 0, evaluated.stderr  # A's row names the store URL: fetched into cache-c
    assert (tmp_path / "cache-c").is_dir()
    with Catalogue(str(tmp_path / "a.db")) as cat:  # a local copy never replaces the store's location
        assert cat.model(report["content_id"]).location == f"{url}/{hex_id}"
    # A again on a machine that has no copy: the step is reused from the store, not recomputed
    again = slimkit_process("--catalogue", str(tmp_path / "a.db"), "run", str(recipe), "-m", "example:stories260K",
                            "--json", "--no-progress", env={**a, "SLIMKIT_ARTIFACT_CACHE": str(tmp_path / "cache-e")})
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["reused"] == [True] and (tmp_path / "cache-e").is_dir()
    # recomputed elsewhere (--force): the upload is skipped, the local copy is kept and opens checked
    f = {**a, "SLIMKIT_ARTIFACT_CACHE": str(tmp_path / "cache-f")}
    forced = slimkit_process("--catalogue", str(tmp_path / "a.db"), "run", str(recipe), "-m", "example:stories260K",
                             "--json", "--no-progress", "--force", env=f)
    assert forced.returncode == 0, forced.stderr
    assert Path(json.loads(forced.stdout)["output"]).parent.parent == tmp_path / "cache-f"
    opened = slimkit_process("--catalogue", str(tmp_path / "a.db"), "eval", hex_id[:8], "--metric", "size", env=f)
    assert opened.returncode == 0, opened.stderr
    print(f"S3 (moto, loopback): run+publish {publish_s:.1f} s, pull in a new process {pull_s:.1f} s")
    # a tampered object: one line, nothing left in the new cache
    monkeypatch.setenv("SLIMKIT_ARTIFACT_CACHE", str(tmp_path / "cache-x"))
    store = open_store(url)
    manifest = store.manifest(hex_id)
    assert manifest is not None
    store.fs.pipe_file(f"{store.root}/{hex_id}/{manifest.folder}/model.safetensors", b"not the weights")
    bad = slimkit_process("--catalogue", str(tmp_path / "b.db"), "pull", hex_id[:8],
                          env={**b, "SLIMKIT_ARTIFACT_CACHE": str(tmp_path / "cache-d")})
    assert bad.returncode == 1
    (line,) = bad.stderr.strip().splitlines()
    assert "file model.safetensors has 15 bytes" in line, line
    assert not [p for p in (tmp_path / "cache-d").rglob("*") if p.is_file()]
    # a machine that fetched it before (cache-c) copies its checked copy: the damaged object is not read
    copied = slimkit_process("--catalogue", str(tmp_path / "b.db"), "pull", hex_id[:8], "--to",
                             str(tmp_path / "copied"), env={**b, "SLIMKIT_ARTIFACT_CACHE": str(tmp_path / "cache-c")})
    assert copied.returncode == 0, copied.stderr
    assert not filecmp.dircmp(local, tmp_path / "copied").diff_files
    # A's gc keeps what A refers to
    assert slimkit_process("--catalogue", str(tmp_path / "a.db"), "gc", "--grace", "0", env=a).returncode == 0
    assert store.has(hex_id)


def test_an_unreachable_store_is_one_quick_line(recipe, tmp_path):
    need_s3(server=False)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    db = tmp_path / "a.db"
    started = time.perf_counter()
    result = slimkit_process("--catalogue", str(db), "--artifacts", "s3://team/models", "run", str(recipe),
                             "-m", "example:stories260K", "--no-progress", env=env)
    took = time.perf_counter() - started
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: artifact store s3://team/models: cannot write (checked before any work): "), line
    assert took < 60, took
    with Catalogue(str(db)) as cat:
        assert cat.runs() == []
