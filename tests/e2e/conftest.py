"""A real JupyterLab on 127.0.0.1 and headless Debian Chromium driven by Playwright.

Run apart from the other tests (``pytest tests/e2e``; the plain ``pytest`` run skips this folder).
Needs ``apt-get install chromium`` (never Playwright's own browser download: no internet here) and
the test extra; without them every test here skips, saying which is missing.

Isolation: the server's config, runtime, settings and workspace folders live in a temporary
folder, each test opens its own workspace (tabs of earlier tests are not restored into it), and
the catalogue is a fresh SQLite file per test (``SLIMKIT_CATALOGUE``). Teardown asks the server
to shut down (it stops its kernels), then kills anything still holding our runtime folder, and
fails if something survived. The whole page at the end of each test goes to
``tests/e2e/artifacts``; pictures of the panel at each stage to ``$SLIMKIT_SCREENSHOTS`` (default:
the same folder); ``make docs-screenshots`` writes the docs' pictures with them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"  # the whole page at the end of each test
SCREENSHOTS = Path(os.environ.get("SLIMKIT_SCREENSHOTS", ARTIFACTS))  # the panel at each stage
SERVER_START_S = 90
UI_TIMEOUT_MS = 60_000  # the machine is shared: a step of the bundled model's run can be slow



def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    import importlib.util

    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)"
    for module, extra in (("playwright", "test"), ("jupyterlab", "test"), ("nbformat", "test"),
                          ("anywidget", "jupyter"), ("ipywidgets", "jupyter")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (the {extra} extra)"
    return None


MISSING = _missing()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, *, method: str = "GET", token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"token {token}"} if token else {}
    data = b"" if method == "POST" else None
    with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers, data=data),
                                timeout=10) as response:
        return response.status, response.read()


def _pids_mentioning(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                status = (entry / "stat").read_text().split()[2]
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
            except (OSError, IndexError):
                continue
            if marker in command and status != "Z":  # zombies are reaped by PID 1 shortly
                found.append(int(entry.name))
    return found


def _die_with_parent() -> None:
    """The server gets SIGTERM if pytest is killed, and then still stops its kernels."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    if MISSING:
        pytest.skip(MISSING)
    base = tmp_path_factory.mktemp("jupyterlab")
    root, runtime = base / "root", base / "runtime"
    root.mkdir()
    token = uuid.uuid4().hex
    settings = base / "settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no news toast over the page
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_RUNTIME_DIR=str(runtime),
               IPYTHONDIR=str(base / "ipython"), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"), JUPYTER_PLATFORM_DIRS="1",
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    port = _free_port()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", "--allow-root", f"--IdentityProvider.token={token}",
               "--ServerApp.password=", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly"]
    log_path = base / "server.log"
    log = open(log_path, "w")
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, preexec_fn=_die_with_parent)
    url = f"http://127.0.0.1:{port}"

    def shutdown() -> None:
        try:
            _request(f"{url}/api/shutdown", method="POST", token=token)
        except (urllib.error.URLError, OSError):
            pass
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        for pid in _pids_mentioning(str(runtime)):  # kernels live in their own sessions
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()

    deadline = time.monotonic() + SERVER_START_S
    while True:
        if process.poll() is not None:
            shutdown()
            pytest.fail(f"jupyter lab exited at once ({process.returncode}):\n{log_path.read_text()}")
        try:
            if _request(f"{url}/api/status", token=token)[0] == 200:
                break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            shutdown()
            pytest.fail(f"jupyter lab did not answer within {SERVER_START_S} s:\n{log_path.read_text()}")
        time.sleep(0.25)
    yield {"url": url, "token": token, "root": root, "log": log_path}
    shutdown()
    time.sleep(1)
    assert not _pids_mentioning(str(runtime)), "processes of the test server outlived it"


@pytest.fixture
def lab(lab_server):
    """The server, with a workspace of this test's own; its kernels are shut down afterwards."""
    yield dict(lab_server, workspace=f"w{uuid.uuid4().hex[:8]}")
    _, body = _request(f"{lab_server['url']}/api/sessions", token=lab_server["token"])
    for session in json.loads(body or b"[]"):
        _request(f"{lab_server['url']}/api/sessions/{session['id']}", method="DELETE", token=lab_server["token"])


@pytest.fixture(scope="session")
def browser():
    if MISSING:
        pytest.skip(MISSING)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:  # the final state of every test, passed or failed
        tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    except Exception:
        pass
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"  # every test, pass or fail


@pytest.fixture
def screenshot():
    """``screenshot(element, name)``: a picture of one element (the docs use these)."""

    def take(element, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        element.screenshot(path=str(SCREENSHOTS / f"{name}.png"))

    return take
