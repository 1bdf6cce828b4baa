"""Clean failures: a full disk, a read-only folder, a missing or unreachable catalogue, a pickle
checkpoint and a plugin that raises each end in one line on stderr, a non-zero exit and nothing
half-written; ``--debug`` or ``SLIMKIT_DEBUG=1`` adds the traceback.

Tests run as root here, where permission bits stop nothing. What really fails as root: a file
where a folder should be (everywhere), a tmpfs mounted small or read-only, and ``chattr +i``
(tests skip where those are not allowed), and RLIMIT_FSIZE in a subprocess (everywhere).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

import slimkit
from slimkit import BaseCompressor, BaseEvaluator, hookimpl
from slimkit.core.catalogue import Catalogue, CatalogueError
from slimkit.core.cli import make_cli
from slimkit.core.errors import ModelLoadError
from slimkit.core.failures import FileSystemError, describe, mask_secrets
from slimkit.core.model_io import load_model, save_model

TABLES = ("runs", "models", "steps", "step_parents", "evaluations")
SECRET_URL = "postgresql://user:secret@127.0.0.1:1/db"
PROVENANCE = {"format": 1, "content_id": "sha256:test", "steps": []}


# -- helpers -------------------------------------------------------------------------------------
def invoke(cli: Any, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)


def slimkit_process(*args: str, env: dict[str, str] | None = None, preexec_fn: Any = None,
                    cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a subprocess."""
    return subprocess.run([sys.executable, "-m", "slimkit", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, preexec_fn=preexec_fn, cwd=cwd)


def error_line(stderr: str) -> str:
    """The one line a failure printed (and nothing else on stderr: no traceback, no warning)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def counts(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}


def tree(folder: Path) -> list[str]:
    """Everything under ``folder``, hidden staging folders included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def run_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """``slimkit run`` of a quick one-step recipe (kept outside the folders tests check)."""
    recipe = tmp_path_factory.mktemp("recipe") / "prune.yaml"
    recipe.write_text("steps: [{method: prune.unstructured, params: {sparsity: 0.5}}]\n")
    return ["run", str(recipe), "--model", "example:stories260K", "--no-progress"]


@pytest.fixture
def catalogue(tmp_path: Path) -> Path:
    """An existing catalogue holding one model, to show that failures leave it as it was."""
    path = tmp_path / "catalogue.db"
    with Catalogue(str(path)) as opened:
        opened.record_model("sha256:" + "ab" * 32, "LlamaForCausalLM", name="kept")
    return path


def remount_read_only(target: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)


# -- describing exceptions -------------------------------------------------------------------------
def test_describe_names_path_cause_and_errno(tmp_path: Path) -> None:
    with pytest.raises(OSError) as raised:
        (tmp_path / "missing" / "file").read_text()
    assert describe(raised.value) == f"{tmp_path / 'missing' / 'file'}: No such file or directory (ENOENT)"
    with pytest.raises(OSError) as renamed:
        os.rename(tmp_path / "a", tmp_path / "b")
    assert describe(renamed.value) == f"{tmp_path / 'a'} -> {tmp_path / 'b'}: No such file or directory (ENOENT)"


def test_describe_database_errors_without_sql(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(SQLAlchemyError) as raised, engine.connect() as connection:
        connection.execute(text("SELECT secret_column FROM no_such_table"))
    engine.dispose()
    assert describe(raised.value) == "database error: OperationalError: no such table: no_such_table"


def test_describe_other_exceptions_and_masks_passwords() -> None:
    assert describe(ValueError("bad\nsecond line")) == "ValueError: bad"
    assert describe(RuntimeError()) == "RuntimeError: RuntimeError"
    assert describe(KeyError(f"cannot reach {SECRET_URL}")) == "KeyError: 'cannot reach postgresql://user:***@127.0.0.1:1/db'"
    assert mask_secrets("mysql://u:p%40ss@h/x?password=zz&a=1: refused") == "mysql://u:***@h/x?password=***&a=1: refused"
    assert mask_secrets("sqlite:////a:b/c@d.db and user@host:22") == "sqlite:////a:b/c@d.db and user@host:22"


# -- a full disk ---------------------------------------------------------------------------------
def test_full_disk_on_save_keeps_the_previous_folder(mount_tmpfs: Any) -> None:
    small = mount_tmpfs("small", "size=256k")
    target = small / "derived"
    target.mkdir()
    (target / "keep.txt").write_text("old model")
    with pytest.raises(FileSystemError) as raised:
        save_model(load_model("example:stories260K"), target, dict(PROVENANCE), overwrite=True)
    assert str(raised.value) == f"cannot save the model to {target}: No space left on device (ENOSPC)"
    assert isinstance(raised.value, OSError)  # callers that caught the system's error still do
    assert tree(small) == ["derived", "derived/keep.txt"]
    assert (target / "keep.txt").read_text() == "old model"


def test_full_disk_during_a_run_is_one_line(mount_tmpfs: Any, catalogue: Path, run_args: list[str]) -> None:
    small = mount_tmpfs("small", "size=256k")
    before = counts(catalogue)
    result = slimkit_process("--catalogue", str(catalogue), *run_args, "--out", str(small / "out"))
    assert result.returncode == 1, result
    line = error_line(result.stderr)
    # Found before any work: the model (about 1 MiB) and the margin do not fit in 256 KiB. A disk
    # that fills while saving anyway is test_file_size_limit_is_one_line_anywhere's EFBIG.
    assert f"not enough free space for the result {small / 'out'}" in line, line
    assert tree(small) == []  # no model, no staging folder
    assert counts(catalogue) == {**before, "runs": before["runs"] + 1}  # the run, recorded failed
    with Catalogue(str(catalogue)) as opened:
        assert [run.status for run in opened.runs()] == ["failed"]


def test_file_size_limit_is_one_line_anywhere(tmp_path: Path, run_args: list[str]) -> None:
    """RLIMIT_FSIZE needs no privileges: a file past the limit fails with EFBIG, like a full disk."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    out = tmp_path / "out"
    result = slimkit_process(*run_args, "--out", str(out), "--no-record", preexec_fn=limit)
    assert result.returncode == 1, result
    line = error_line(result.stderr)
    assert line == f"Error: cannot save the model to {out}: File too large (EFBIG)", line
    assert tree(tmp_path) == []


def test_scores_that_do_not_fit_leave_no_partial_file(tmp_path: Path) -> None:
    """``slimkit score`` past a file size limit (EFBIG, like a full disk): one line, no hidden file."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    out = tmp_path / "scores.safetensors"
    result = slimkit_process("score", "example:stories260K", "-s", "magnitude", "-o", str(out), preexec_fn=limit)
    assert result.returncode == 1, result
    assert error_line(result.stderr) == f"Error: cannot write the scores to {out}: File too large (EFBIG)"
    assert tree(tmp_path) == []


# -- a read-only folder --------------------------------------------------------------------------
def test_file_in_place_of_the_output_folder(host: Any, tmp_path: Path, catalogue: Path, run_args: list[str]) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    before = counts(catalogue)
    result = invoke(make_cli(host), "--catalogue", str(catalogue), *run_args, "--out", str(blocker / "out"))
    assert result.exit_code == 1
    assert str(blocker) in error_line(result.stderr)
    with pytest.raises(FileSystemError) as raised:
        save_model(load_model("example:stories260K"), blocker / "out" / "derived", dict(PROVENANCE))
    assert str(raised.value) == f"cannot save the model to {blocker / 'out' / 'derived'}: {blocker} is a file, not a folder"
    assert blocker.read_text() == "a file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("catalogue.db")) == ["blocker"]
    assert {k: v for k, v in counts(catalogue).items() if k != "runs"} == {k: v for k, v in before.items() if k != "runs"}


@pytest.mark.parametrize("how", ["read-only mount", "chattr +i"])
def test_read_only_output_folder(how: str, mount_tmpfs: Any, immutable: Any, tmp_path: Path,
                                 run_args: list[str]) -> None:
    if how == "read-only mount":
        folder = mount_tmpfs("readonly", "size=4m")
        remount_read_only(folder)
        cause = "Read-only file system (EROFS)"
    else:
        folder = tmp_path / "readonly"
        folder.mkdir()
        immutable(folder)
        cause = "Operation not permitted (EPERM)"
    with pytest.raises(FileSystemError) as raised:
        save_model(load_model("example:stories260K"), folder / "derived", dict(PROVENANCE))
    assert str(raised.value).startswith(f"cannot save the model to {folder / 'derived'}: ")
    assert str(raised.value).endswith(cause), raised.value
    assert tree(folder) == []
    result = slimkit_process(*run_args, "--out", str(folder / "derived"), "--no-record")
    assert result.returncode == 1, result
    assert str(folder / "derived") in error_line(result.stderr)
    assert tree(folder) == []


def test_read_only_catalogue_folder(mount_tmpfs: Any, host: Any) -> None:
    folder = mount_tmpfs("catalogues", "size=4m")
    Catalogue(str(folder / "catalogue.db")).close()
    remount_read_only(folder)
    before = tree(folder)
    result = invoke(make_cli(host), "--catalogue", str(folder / "catalogue.db"), "models")
    assert result.exit_code == 1
    line = error_line(result.stderr)
    assert line.startswith(f"Error: cannot open catalogue {folder / 'catalogue.db'}: "), line
    assert line.endswith(f"({folder} is on a read-only file system)"), line
    assert tree(folder) == before


# -- catalogues that cannot be opened --------------------------------------------------------------
@pytest.mark.parametrize("command", [["models"], ["db", "upgrade"], ["db", "current"], ["run"]])
def test_sqlite_url_whose_folder_does_not_exist(host: Any, tmp_path: Path, command: list[str],
                                                run_args: list[str]) -> None:
    url = "sqlite:////nonexistent/dir/cat.db"
    args = [*run_args, "--out", str(tmp_path / "out")] if command == ["run"] else command
    result = invoke(make_cli(host), "--catalogue", url, *args)
    assert result.exit_code == 1
    line = error_line(result.stderr)
    assert "/nonexistent/dir/cat.db" in line and "/nonexistent/dir does not exist" in line, line
    assert not Path("/nonexistent").exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(CatalogueError, match="does not exist"):
        Catalogue(url)
    assert not Path("/nonexistent").exists()


@pytest.mark.parametrize("command", [["models"], ["db", "upgrade"], ["db", "current"], ["eval", "example:stories260K"]])
def test_unreachable_postgresql_is_one_line_without_the_password(host: Any, command: list[str]) -> None:
    result = invoke(make_cli(host), "--catalogue", SECRET_URL, *command)
    assert result.exit_code == 1
    assert "secret" not in result.output and "secret" not in result.stderr
    line = error_line(result.stderr)
    assert line.startswith("Error: cannot open catalogue postgresql://user:***@127.0.0.1:1/db: "), line
    # psycopg is not a dependency: without it the line says what to install, with it why it failed
    assert ("driver psycopg is not installed (pip install 'psycopg[binary]')" in line
            or "Connection refused" in line), line


def test_catalogue_api_error_hides_the_password() -> None:
    with pytest.raises(CatalogueError) as raised:
        Catalogue(SECRET_URL)
    assert "secret" not in str(raised.value) and "user:***@" in str(raised.value)


def test_database_error_in_a_command_names_the_command_and_catalogue(host: Any, catalogue: Path) -> None:
    from slimkit.core.catalogue.migrate import to_url

    with contextlib.closing(sqlite3.connect(catalogue)) as connection, connection:
        connection.execute("DROP TABLE evaluations")  # opens fine (right revision), fails when used
    result = invoke(make_cli(host), "--catalogue", str(catalogue), "eval", "example:stories260K", "--metric", "size")
    assert result.exit_code == 1
    assert error_line(result.stderr) == (
        f"Error: eval: catalogue {to_url(catalogue)}: database error: OperationalError: no such table: evaluations "
        "(--debug shows the traceback)"
    )


# -- pickle checkpoints ----------------------------------------------------------------------------
class _Trap:
    """Unpickling this creates a folder: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.mkdir, (str(self.marker),)


def test_pickle_checkpoint_is_refused_never_unpickled(tmp_path: Path, stories: Path, host: Any) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(stories / "config.json", folder / "config.json")
    marker = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    for spec in (folder, folder / "pytorch_model.bin"):
        with pytest.raises(ModelLoadError) as raised:
            load_model(spec)
        message = str(raised.value)
        assert "\n" not in message and "slimkit never unpickles" in message
        assert "convert it to safetensors in place once: python -c" in message
    assert not marker.exists()
    result = invoke(make_cli(host), "eval", str(folder), "--no-record")
    assert result.exit_code == 1 and "pytorch_model.bin" in error_line(result.stderr)
    assert not marker.exists()
    # beside safetensors weights a pickle is never read either
    shutil.copy(stories / "model.safetensors", folder / "model.safetensors")
    assert load_model(folder).architecture == "LlamaForCausalLM" and not marker.exists()
    with pytest.raises(ModelLoadError, match=f"load its folder {folder} instead"):
        load_model(folder / "pytorch_model.bin")
    assert not marker.exists()


def test_pickle_conversion_command_from_the_message_works(tmp_path: Path, stories: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in os.listdir(stories):
        if not name.endswith(".safetensors"):
            shutil.copy(stories / name, folder / name)
    original = slimkit.load_model("example:stories260K")
    torch.save(original.model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as raised:
        load_model(folder)
    command = str(raised.value).split('python -c "', 1)[1].rstrip('"')
    subprocess.run([sys.executable, "-c", command], check=True, capture_output=True, timeout=300)
    converted = load_model(folder)
    ids = torch.tensor([[1, 17, 42, 99]])
    with torch.no_grad():
        torch.testing.assert_close(converted.model(input_ids=ids).logits, original.model(input_ids=ids).logits)


def test_raw_pickle_file_without_config(tmp_path: Path) -> None:
    (tmp_path / "weights.pt").write_bytes(pickle.dumps(_Trap(tmp_path / "unpickled")))
    for spec in (tmp_path, tmp_path / "weights.pt"):
        with pytest.raises(ModelLoadError, match="slimkit never unpickles .*: give it a Hugging Face folder"):
            load_model(spec)
    assert not (tmp_path / "unpickled").exists()


# -- plugins that raise, --debug -------------------------------------------------------------------
class BrokenEvaluator(BaseEvaluator):
    """Raises, as a third-party evaluator with a bug would."""

    name = "test.broken"

    def evaluate(self, model: Any, config: Any, ctx: Any) -> Any:
        raise ValueError("tokenizer exploded")


class InterruptedCompressor(BaseCompressor):
    """Stands for ^C in the middle of a step."""

    name = "test.interrupted"

    def compress_(self, model: Any, adapter: Any, config: Any, ctx: Any) -> Any:
        next(model.model.parameters()).data.zero_()
        raise KeyboardInterrupt


class BrokenPlugin:
    @hookimpl
    def register_evaluators(self, register: Any) -> None:
        register(BrokenEvaluator)

    @hookimpl
    def register_compressors(self, register: Any) -> None:
        register(InterruptedCompressor)


@pytest.fixture
def broken_cli(register_plugin: Any) -> Any:
    return make_cli(register_plugin(BrokenPlugin(), name="broken-plugin"))


def test_plugin_that_raises_during_eval_is_one_line(broken_cli: Any, catalogue: Path) -> None:
    before = counts(catalogue)
    result = invoke(broken_cli, "--catalogue", str(catalogue), "eval", "example:stories260K", "--metric", "test.broken")
    assert result.exit_code == 1
    line = error_line(result.stderr)
    assert "broken-plugin" in line and "ValueError: tokenizer exploded" in line, line
    # The runner names the evaluator and its plugin; its traceback is one flag away.
    assert line == ("Error: evaluator 'test.broken' (plugin 'broken-plugin') failed in evaluate: "
                    "ValueError: tokenizer exploded (--debug shows the traceback)"), line
    assert "Traceback" not in result.output
    assert counts(catalogue) == {**before, "runs": before["runs"] + 1}  # no model, no metric: a failed run
    with Catalogue(str(catalogue)) as opened:
        (run,) = opened.runs()
        assert run.status == "failed" and "tokenizer exploded" in (run.error or "")


@pytest.mark.parametrize("how", ["--debug", "SLIMKIT_DEBUG=1", "neither"])
def test_debug_shows_the_traceback(broken_cli: Any, how: str) -> None:
    flag = ["--debug"] if how == "--debug" else []
    env = {"SLIMKIT_DEBUG": "1" if how == "SLIMKIT_DEBUG=1" else ""}
    result = invoke(broken_cli, *flag, "eval", "example:stories260K", "--metric", "test.broken", "--no-record", env=env)
    assert result.exit_code == 1
    if how == "neither":
        assert "Traceback" not in result.stderr and "(--debug shows the traceback)" in error_line(result.stderr)
        return
    assert result.stderr.lstrip().startswith("Traceback (most recent call last):")
    assert 'raise ValueError("tokenizer exploded")' in result.stderr  # the plugin's own line
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ")


def test_debug_on_a_slimkit_error_and_its_absence(host: Any) -> None:
    plain = invoke(make_cli(host), "eval", "./no/such/model")
    assert error_line(plain.stderr) == "Error: no such model folder or file: ./no/such/model"
    debug = invoke(make_cli(host), "--debug", "eval", "./no/such/model")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr and "ModelLoadError" in debug.stderr


def test_interrupted_run_writes_nothing(broken_cli: Any, tmp_path: Path, catalogue: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps: [{method: prune.unstructured}, {method: test.interrupted}]\n")
    before = counts(catalogue)
    result = invoke(broken_cli, "--catalogue", str(catalogue), "run", str(recipe), "-m", "example:stories260K",
                    "--out", str(tmp_path / "out"), "--no-progress")
    assert result.exit_code == 130 and result.stderr.strip() == "Interrupted: nothing was written."
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("catalogue.db")) == ["r.yaml"]
    assert {k: v for k, v in counts(catalogue).items() if k != "runs"} == {k: v for k, v in before.items() if k != "runs"}
