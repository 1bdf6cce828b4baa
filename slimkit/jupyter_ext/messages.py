"""How the panel shows a failure: never as a bare traceback.

A problem with the input (a :class:`~slimkit.core.errors.SlimkitError`) is shown by its message;
a refused export (:class:`~slimkit.core.errors.ExportError`) by what was refused and the list of
its problems, one line each, as the exporter's ``check`` wrote them; anything else (a plugin's
bug) by its type and message, with the traceback folded under "details".
"""

from __future__ import annotations

import html

from slimkit.core.errors import ExportError, SlimkitError


def _export_heading(error: ExportError) -> str:
    """What was refused (``cannot export X as gguf``), without the problems the list shows."""
    what = getattr(error, "what", None)
    if isinstance(what, str) and what:
        return what
    first = str(error).split("\n", 1)[0]
    if len(error.problems) == 1:  # "what: problem"
        return first.removesuffix(error.problems[0]).rstrip(": ") or "export"
    return first.rstrip(":")  # "what: N problems"


def error_html(error: BaseException, details: str = "") -> str:
    """The error as a ``slimkit-error`` block (escaped: messages hold paths and names users typed)."""
    if isinstance(error, ExportError) and error.problems:
        items = "".join(f"<li>{html.escape(str(line))}</li>" for line in error.problems)
        text = f"{html.escape(_export_heading(error))}<ul class='slimkit-problems'>{items}</ul>"
    elif isinstance(error, SlimkitError):
        text = html.escape(str(error))
    else:
        text = f"{type(error).__name__}: {html.escape(str(error))}"
    folded = (f"<details><summary>details</summary><pre>{html.escape(details)}</pre></details>"
              if details else "")
    return f"<div class='slimkit-error' style='color:#b00020'><b>Error:</b> {text}</div>{folded}"
