"""A sweep or search file: a recipe whose steps may hold choices and ranges, with goals.

It is YAML (or the same structure from Python)::

    name: prune-then-quantize
    calibration: {n_samples: 16, seq_len: 128}
    steps:
      - method: [prune.unstructured, prune.sparsegpt]   # a list: one choice per method
        params: {sparsity: [0.3, 0.4, 0.5]}              # a list where the field takes one value
        optional: true                                   # also try without this step
      - method: quantize.gptq
        params: {bits: {choice: [3, 4]}, group_size: 64}
    order: fixed                 # or 'any': every order of the steps is tried too
    evaluate:
      - metric: perplexity
        params: {max_windows: 40}
    proxy: {perplexity: {max_windows: 4}}   # cheap evaluation of every trial; the full one for the front
    objectives: [minimize perplexity, minimize size]
    constraints: [size <= 0.3 x base, perplexity <= 1.1 x base]
    sampler: tpe                 # search: tpe, nsga2 or random (Optuna)
    budget: {trials: 20, time: 30m}

A parameter is a choice when it is a list for a field that takes one value, or ``{choice: [...]}``
(for a field whose value is itself a list); ``{range: [LOW, HIGH], step: S, log: false}`` is an
integer or real range (a sweep needs its ``step``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from slimkit.core.config import describe_validation_error
from slimkit.core.errors import SlimkitError
from slimkit.core.recipe import CalibrationSpec, EvalSpec, yaml_problem
from slimkit.core.runtime import RuntimeSpec

SAMPLERS = ("tpe", "nsga2", "random")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$")


class SearchError(SlimkitError):
    """A sweep or search file is malformed, or its space, goals or budget cannot work; lists every
    problem found, before any work."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        where = f"{source}: " if source else ""
        text = self.problems[0] if len(self.problems) == 1 else \
            f"{len(self.problems)} problems: " + "; ".join(self.problems)
        super().__init__(where + text)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepSpace(_Strict):
    method: str | list[str] = Field(description="An installed compressor, or a list of them to choose from.")
    params: dict[str, Any] = Field(default_factory=dict, description="The compressor's config fields: a value, a "
                                   "list of values (for a field that takes one), {choice: [...]}, or "
                                   "{range: [LOW, HIGH], step: S, log: false}.")
    seed: int | None = Field(None, description="Seed for this step (default: the file's seed).")
    optional: bool = Field(False, description="Also try the recipes without this step.")

    @field_validator("method")
    @classmethod
    def _methods(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("a list of methods must name at least one method, each once")
        return value

    @property
    def methods(self) -> tuple[str, ...]:
        return (self.method,) if isinstance(self.method, str) else tuple(self.method)


class Budget(_Strict):
    trials: int | None = Field(None, ge=1, description="New trials to run (trials the catalogue already has are free).")
    time: str | None = Field(None, description="Stop starting trials after this long, e.g. 90s, 20m, 2h.")

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @property
    def seconds(self) -> float | None:
        return None if self.time is None else parse_duration(self.time)

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """``trials=N``, ``time=20m``, or both joined by a comma (the CLI's ``--budget``)."""
        fields: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in {"trials", "time"}:
                raise SlimkitError(f"cannot read the budget {text!r}: write trials=N, time=DURATION (e.g. 30m), "
                                   "or both separated by a comma")
            fields[key.strip()] = value.strip()
        try:
            return cls.model_validate(fields)
        except ValidationError as error:
            raise SlimkitError(f"budget {text!r}: " + "; ".join(describe_validation_error(error))) from None


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``20m``, ``1.5h``."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"cannot read the duration {text!r}: write a number with s, m or h, e.g. 20m")
    return float(match.group(1)) * {"h": 3600.0, "m": 60.0, "min": 60.0}.get(match.group(2) or "s", 1.0)


class SearchSpec(_Strict):
    """A well-formed sweep or search file (the space is checked against the methods by
    :func:`slimkit.core.search.space.build_space`)."""

    name: str | None = None
    description: str | None = None
    seed: int = Field(0, description="The recipes' seed, and the sampler's.")
    calibration: CalibrationSpec | None = None
    steps: list[StepSpace] = Field(min_length=1)
    order: Literal["fixed", "any"] = Field("fixed", description="'any': every order of the steps is tried too.")
    evaluate: list[EvalSpec] = Field(default_factory=list)
    proxy: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Cheaper params of evaluators "
                                             "(name -> params) for every trial; the front is evaluated fully.")
    objectives: list[str | dict[str, str]] = Field(default_factory=list, description="'minimize METRIC' or "
                                                   "'maximize METRIC' (a metric, or the model columns size, params).")
    constraints: list[str] = Field(default_factory=list, description="'METRIC OP NUMBER', 'METRIC OP FACTOR x base' "
                                   "or 'stepN.FIELD OP NUMBER', e.g. 'size <= 0.3 x base'.")
    sampler: Literal["tpe", "nsga2", "random"] = Field("tpe", description="Optuna sampler of a search.")
    budget: Budget | None = None
    runtime: RuntimeSpec | None = Field(None, description="How every trial loads the model (dtype, device).")
    base_dir: Path | None = Field(None, exclude=True, description="Folder relative paths are read from.")

    @classmethod
    def from_data(cls, data: Any, *, source: str | None = None, base_dir: Path | None = None) -> "SearchSpec":
        if not isinstance(data, dict):
            raise SearchError([f"a sweep or search file is a mapping with 'steps' (got {type(data).__name__})"],
                              source)
        try:
            return cls.model_validate({**data, "base_dir": base_dir})
        except ValidationError as error:
            raise SearchError(describe_validation_error(error), source) from None

    @classmethod
    def from_yaml(cls, text: str, *, source: str | None = None, base_dir: Path | None = None) -> "SearchSpec":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise SearchError([yaml_problem(error)], source) from None
        if data is None:
            raise SearchError(["the file is empty"], source)
        return cls.from_data(data, source=source, base_dir=base_dir)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True, exclude={"base_dir"}), sort_keys=False)


def load_search(path: str | os.PathLike[str]) -> SearchSpec:
    """Read a sweep or search file, or a bundled one as ``example:NAME``."""
    from slimkit.core.recipe import EXAMPLE_PREFIX

    text = str(path)
    if text.startswith(EXAMPLE_PREFIX):
        from slimkit.core.model_io import examples_root

        folder = examples_root() / "searches"
        file = folder / f"{text[len(EXAMPLE_PREFIX):]}.yaml"
        if not file.is_file():
            bundled = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
            raise SlimkitError(f"no bundled sweep or search {text[len(EXAMPLE_PREFIX):]!r}; bundled: {bundled}")
    else:
        file = Path(path).expanduser()
    if not file.is_file():
        raise SlimkitError(f"no such sweep or search file: {path}")
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise SlimkitError(f"cannot read {file}: {error}") from None
    return SearchSpec.from_yaml(text, source=str(file), base_dir=file.parent)
