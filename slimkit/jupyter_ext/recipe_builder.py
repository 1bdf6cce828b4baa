"""The recipe builder: a list of steps to add, reorder and remove, read from and written to YAML.

It holds plain step dictionaries (``{"method": ..., "params": {...}}``, the recipe file's own
shape) and the recipe's other sections (calibration, evaluate, name, seed) as loaded, so a recipe
read from a file and saved again keeps what the panel does not edit; a saved recipe also holds the
sections its owner adds (``defaults``), so the file runs what the panel's Run would run. Loading goes through
:meth:`Recipe.from_yaml`, so a malformed file gets the same messages as on the command line; the
current steps are kept when a file cannot be read.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import ipywidgets as w

from slimkit.core.errors import SlimkitError
from slimkit.core.recipe import Recipe
from slimkit.jupyter_ext.serial import serialised


def describe_step(step: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in step.get("params", {}).items())
    return f"{step['method']}" + (f" ({params})" if params else "")


class RecipeBuilder:
    """Steps in order plus the loaded recipe's other sections; ``widget`` shows and edits them."""

    def __init__(self, on_change: Callable[["RecipeBuilder"], None] | None = None, *,
                 defaults: Callable[[], dict[str, Any]] | None = None) -> None:
        self.defaults = defaults  # sections the owner adds (the panel: calibration, evaluation)
        self.steps: list[dict[str, Any]] = []
        self.sections: dict[str, Any] = {}  # calibration / evaluate / name / seed of a loaded recipe
        self._listeners = [on_change] if on_change else []
        self.list = w.Select(options=[], rows=5, layout=w.Layout(width="100%"))
        self.list.add_class("slimkit-recipe-steps")
        self.up = w.Button(description="Up", icon="arrow-up", layout=w.Layout(width="auto"))
        self.down = w.Button(description="Down", icon="arrow-down", layout=w.Layout(width="auto"))
        self.remove_button = w.Button(description="Remove", icon="trash", layout=w.Layout(width="auto"))
        self.clear_button = w.Button(description="Clear", layout=w.Layout(width="auto"))
        self.path = w.Text(placeholder="recipe.yaml", description="YAML file", layout=w.Layout(width="60%"))
        self.load_button = w.Button(description="Load", icon="folder-open", layout=w.Layout(width="auto"))
        self.save_button = w.Button(description="Save", icon="save", layout=w.Layout(width="auto"))
        self.message = w.HTML()
        self.message.add_class("slimkit-recipe-message")
        self.up.on_click(serialised(lambda _: self.move(self.selected, -1)))
        self.down.on_click(serialised(lambda _: self.move(self.selected, +1)))
        self.remove_button.on_click(serialised(lambda _: self.remove(self.selected)))
        self.clear_button.on_click(serialised(lambda _: self.clear()))
        self.load_button.on_click(serialised(lambda _: self._guarded(self.load, self.path.value)))
        self.save_button.on_click(serialised(lambda _: self._guarded(self.save, self.path.value)))
        self.widget = w.VBox([
            self.list, w.HBox([self.up, self.down, self.remove_button, self.clear_button]),
            w.HBox([self.path, self.load_button, self.save_button]), self.message,
        ])
        self._refresh()

    # -- editing ------------------------------------------------------------------------------
    def on_change(self, callback: Callable[["RecipeBuilder"], None]) -> None:
        self._listeners.append(callback)

    @property
    def selected(self) -> int | None:
        return self.list.index if self.list.index is not None and self.list.index >= 0 else None

    def add(self, method: str, params: dict[str, Any] | None = None) -> None:
        self.steps.append({"method": method, "params": copy.deepcopy(params or {})})
        self._refresh(select=len(self.steps) - 1)

    def replace(self, index: int, method: str, params: dict[str, Any] | None = None) -> None:
        self.steps[index] = {**self.steps[index], "method": method, "params": copy.deepcopy(params or {})}
        self._refresh(select=index)

    def remove(self, index: int | None) -> None:
        if index is None or not 0 <= index < len(self.steps):
            return
        del self.steps[index]
        self._refresh(select=min(index, len(self.steps) - 1) if self.steps else None)

    def move(self, index: int | None, delta: int) -> None:
        if index is None or not 0 <= index + delta < len(self.steps):
            return
        self.steps[index], self.steps[index + delta] = self.steps[index + delta], self.steps[index]
        self._refresh(select=index + delta)

    def clear(self) -> None:
        self.steps, self.sections = [], {}
        self._refresh()

    # -- files ----------------------------------------------------------------------------------
    def recipe_data(self, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
        """The recipe as a dictionary: ``defaults`` (e.g. the panel's evaluation), then the loaded
        sections over them, then the steps."""
        return {**(defaults or {}), **copy.deepcopy(self.sections), "steps": copy.deepcopy(self.steps)}

    def load(self, path: str) -> None:
        """Replace the steps and sections by those of a YAML recipe (``example:NAME`` too)."""
        from slimkit.core.recipe import load_recipe

        if not path.strip():
            raise SlimkitError("give the recipe file's path")
        recipe = load_recipe(path.strip())
        data = recipe.model_dump(mode="json", exclude_none=True, exclude={"base_dir"})
        self.steps = data.pop("steps")
        self.sections = data
        self._refresh(select=0 if self.steps else None)
        self._say(f"loaded {len(self.steps)} steps from {path}")

    def save(self, path: str) -> None:
        if not path.strip():
            raise SlimkitError("give the recipe file's path")
        if not self.steps:
            raise SlimkitError("the recipe has no steps to save")
        data = self.recipe_data(self.defaults() if self.defaults else None)  # what Run would run
        recipe = Recipe.from_data(data)  # refuses what a recipe file could not hold
        target = Path(path.strip()).expanduser()
        target.write_text(recipe.to_yaml())
        self._say(f"saved {len(self.steps)} steps to {target}")

    # -- internals ------------------------------------------------------------------------------
    def _guarded(self, action: Callable[[str], None], path: str) -> None:
        try:
            action(path)
        except (SlimkitError, OSError) as error:
            self._say(str(error), error=True)

    def _say(self, text: str, *, error: bool = False) -> None:
        import html

        colour = "#b00020" if error else "#2e7d32"
        self.message.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    def _refresh(self, select: int | None = None) -> None:
        self.list.options = [(f"{i}. {describe_step(step)}", i) for i, step in enumerate(self.steps, start=1)]
        self.list.index = select if select is not None and self.steps else None
        for button in (self.up, self.down, self.remove_button, self.clear_button, self.save_button):
            button.disabled = not self.steps
        for callback in self._listeners:
            callback(self)
