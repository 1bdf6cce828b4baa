"""Teachers of distillation steps: which model a step learns from, loaded once per recipe run.

A compressor names its teacher field (``BaseCompressor.teacher_field``); the value ``"input"``
means the recipe's input model, as it was before any step changed it, and anything else is a
model spec :func:`~slimkit.load_model` takes (a folder, ``example:NAME``, a GGUF file, a hub id).
The input model is kept by its folder when it came from one (and reloaded when needed), else as a
copy taken before the first step. Other teachers are loaded when the run starts, so a wrong path
fails it before any step has run.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from slimkit.core.errors import ModelLoadError
from slimkit.core.model_io import LoadedModel, load_model
from slimkit.core.provenance import content_id

INPUT = "input"


class Teachers:
    """The teachers of one recipe run, by spec: ``(model, content id)`` loaded at most once."""

    def __init__(self, planned: list[tuple[Any, Any]], loaded: LoadedModel, input_id: str) -> None:
        """``planned``: ``(info, config)`` of every step; ``loaded``: the input model, unchanged yet."""
        self.specs = [spec for info, config in planned if (spec := teacher_spec(info, config)) is not None]
        self.input_id = input_id
        self._input_path: Path | None = None
        self._input_copy: LoadedModel | None = None
        if INPUT in self.specs:
            if loaded.path is not None and (loaded.path / "config.json").is_file():
                self._input_path = loaded.path
            else:
                self._input_copy = copy.deepcopy(loaded)
        self._cache: dict[str, tuple[LoadedModel, str]] = {}
        for spec in self.specs:
            if spec != INPUT:
                self.get(spec)

    def get(self, spec: str) -> tuple[LoadedModel, str]:
        if spec not in self._cache:
            if spec == INPUT:
                model = self._input_copy or load_model(self._input_path)  # type: ignore[arg-type]
                if self._input_copy is None and content_id(model.model) != self.input_id:
                    raise ModelLoadError(f"the recipe's input model changed on disk ({self._input_path}) "
                                         "while the recipe ran; it cannot be the teacher")
                self._cache[spec] = (model, self.input_id)
            else:
                model = load_model(spec)
                self._cache[spec] = (model, content_id(model.model))
        return self._cache[spec]


def teacher_spec(info: Any, config: Any) -> str | None:
    """The teacher spec of a planned step, or ``None`` for a step without one."""
    field = getattr(info.cls, "teacher_field", None)
    value = getattr(config, field, None) if field else None
    return str(value) if value else None
