"""pytest fixtures for slimkit plugin authors, loaded automatically once slimkit is installed.

slimkit declares this module as a ``pytest11`` entry point, so any test suite that runs in an
environment with slimkit installed can use the fixtures without importing anything:

``slimkit_host``
    A fresh :class:`slimkit.core.host.Host` with only the bundled plugins (installed entry-point
    plugins are not loaded, so the test sees exactly what it registers).

``write_distributions(folder, {dist: (entry point, source)}, version)`` (a function)
    Lays out installed plugin distributions in ``folder`` for a subprocess's ``PYTHONPATH``.

``one_line_error(result, *fragments) -> str`` (a function)
    Checks that a CLI invocation's result (click's ``CliRunner`` result) failed as slimkit's
    commands do on bad input: exit status 1, one ``Error: ...`` line on stderr holding every
    fragment, no traceback. Returns the line.

``register_plugin``
    ``register_plugin(plugin, name=None) -> host`` registers a throwaway plugin (a module, an
    object or a class holding ``@hookimpl`` functions) on ``slimkit_host`` and returns the host.
    Like ``make_host`` it refuses hooks slimkit does not define (a misspelled ``register_scorer``
    raises ``pluggy.PluginValidationError`` at once instead of being silently ignored); pass
    ``check_hooks=False`` to register such a plugin anyway. Every plugin it registered is
    unregistered after the test, pass or fail.

Example, testing a scorer before it is packaged::

    from pydantic import Field
    from slimkit import BaseScorer, MethodConfig, Scores, hookimpl

    class OnesConfig(MethodConfig):
        value: float = Field(1.0, description="The score every weight gets.")

    class OnesScorer(BaseScorer):
        \"\"\"Every weight scores the same.\"\"\"

        name = "mine.ones"
        granularity = "weight"
        Config = OnesConfig

        def score(self, model, adapter, config, ctx):
            ...

    class Plugin:
        @hookimpl
        def register_scorers(self, register):
            register(OnesScorer)

    def test_my_scorer_is_installed(register_plugin):
        host = register_plugin(Plugin(), name="mine")
        info = host.scorers.get("mine.ones")
        assert info.plugin == "mine"
        assert not host.problems

The fixtures import slimkit only when a test uses them: pytest imports every ``pytest11`` plugin
at start-up, and a suite that never touches slimkit should not pay for importing torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.host import Host

__all__ = ["slimkit_host", "register_plugin", "write_distributions"]


@pytest.fixture
def slimkit_host() -> "Host":
    """A fresh host with the bundled plugins only (``make_host(load_entrypoints=False)``)."""
    from slimkit.core.host import make_host

    return make_host(load_entrypoints=False)


@pytest.fixture
def register_plugin(slimkit_host: "Host") -> Iterator[Callable[..., "Host"]]:
    """``register_plugin(plugin, name=None, *, check_hooks=True)``: register a throwaway plugin on
    ``slimkit_host``. Returns the host; the plugins are unregistered when the test ends.
    """
    registered: list[str] = []

    def register(plugin: object, name: str | None = None, *, check_hooks: bool = True) -> "Host":
        registered.append(slimkit_host.register(plugin, name=name))
        if check_hooks:
            slimkit_host.pm.check_pending()
        return slimkit_host

    try:
        yield register
    finally:
        # Unregistering a plugin the test already removed (or check_pending dropped) is a no-op.
        for name in reversed(registered):
            slimkit_host.unregister(name=name)


def write_distributions(folder: Path, distributions: dict[str, tuple[str, str]], version: str = "1.0") -> Path:
    """Make ``folder`` hold installed plugin distributions, as ``pip install --target`` would leave
    them: for each ``{distribution: (entry-point name, module source)}`` a module and a
    ``*.dist-info`` with its ``slimkit`` entry point. Put ``folder`` on ``PYTHONPATH`` of a
    subprocess to test what a user gets (discovery, ``SLIMKIT_LOAD_PLUGINS``, broken plugins)."""
    import textwrap

    for dist, (entry_point, source) in distributions.items():
        module = dist.replace("-", "_")
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
        info = folder / f"{module}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[slimkit]\n{entry_point} = {module}\n")
    return folder


def one_line_error(result: Any, *fragments: str) -> str:
    """The one ``Error: ...`` line a failed CLI call printed (see the module docstring)."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]
