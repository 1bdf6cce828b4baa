"""Recipes: an ordered list of compression steps, with optional calibration data and evaluations.

A recipe is YAML (or the same structure from Python)::

    name: prune-50
    calibration: {text: data.txt, n_samples: 16, seq_len: 128, seed: 0}   # optional
    steps:
      - method: prune.unstructured
        params: {sparsity: 0.5}
    evaluate:                                                            # optional
      - metric: perplexity
        params: {max_windows: 40}
    export:                                                              # optional
      - format: gguf
        params: {}
        out: m1.gguf       # optional: default beside the saved model folder
    runtime: {dtype: bfloat16, device: cpu}                              # optional: how the model loads

It is validated completely before any work starts: every problem found is reported at once, each
naming the step, the method, the field and what is allowed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Literal, TYPE_CHECKING, Any, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slimkit.core.config import MethodConfig, describe_validation_error, validation_problems
from slimkit.core.errors import RecipeError, SlimkitError, UnknownMethodError
from slimkit.core.identity import MethodIdentity, guarded, resolve_uses
from slimkit.core.runtime import RuntimeSpec
from slimkit.core.steps import PlannedStep, check_step

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.data import CalibrationData
    from slimkit.core.host import Host
    from slimkit.core.model_io import LoadedModel
    from slimkit.core.registry import MethodInfo

EXAMPLE_PREFIX = "example:"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepSpec(_Strict):
    method: str = Field(description="Name of an installed compressor.")
    params: dict[str, Any] = Field(default_factory=dict, description="The compressor's config fields.")
    seed: int | None = Field(None, description="Seed for this step (default: the recipe's seed).")


class EvalSpec(_Strict):
    metric: str = Field(description="Name of an installed evaluator.")
    params: dict[str, Any] = Field(default_factory=dict, description="The evaluator's config fields.")


class ExportSpec(_Strict):
    """One entry of a recipe's ``export:`` section: write the run's model in a serving format."""

    format: str = Field(description="Name of an installed exporter (slimkit methods --family exporter).")
    params: dict[str, Any] = Field(default_factory=dict, description="The exporter's config fields.")
    out: str | None = Field(None, description="File or folder to write (relative paths: to the recipe's folder); "
                            "default: beside the saved model folder.")


class CalibrationSpec(_Strict):
    text: str | None = Field(None, description="Text or JSONL file (default: the bundled TinyStories sample).")
    n_samples: int = Field(16, ge=1, le=100000, description="Number of windows.")
    seq_len: int = Field(128, ge=2, le=131072, description="Tokens per window.")
    seed: int = Field(0, description="Seed for drawing the windows.")
    field: str = Field("text", description="JSONL field holding the text.")
    join: str = Field("\n\n", description="Separator between JSONL records.")
    collapse_blank_lines: bool = Field(False, description="Replace runs of blank lines by one newline.")
    precision: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="What data-aware methods run the model's blocks in while calibrating: bfloat16 (autocast; "
        "statistics still summed in float32/float64, weights changed in their own precision) is several times "
        "faster on CPUs with AMX or AVX512-BF16 and on GPUs, as the reference implementations' half precision.",
    )


class Recipe(_Strict):
    """A well-formed recipe. :meth:`resolve` checks it against the installed methods (and a model)."""

    name: str | None = None
    description: str | None = None
    seed: int = 0
    calibration: CalibrationSpec | None = None
    steps: list[StepSpec] = Field(min_length=1)
    evaluate: list[EvalSpec] = Field(default_factory=list)
    export: list[ExportSpec] = Field(default_factory=list)
    runtime: RuntimeSpec | None = Field(None, description="How the model is loaded when the recipe loads it: "
                                        "dtype and device (--dtype/--device override it).")
    base_dir: Path | None = Field(None, exclude=True, description="Folder relative paths are read from.")

    @classmethod
    def from_data(cls, data: Any, *, source: str | None = None, base_dir: Path | None = None) -> "Recipe":
        if isinstance(data, list):  # a bare list of steps is a recipe too
            data = {"steps": data}
        if not isinstance(data, dict):
            raise RecipeError([f"a recipe is a mapping with 'steps' (got {type(data).__name__})"], source)
        try:
            return cls.model_validate({**data, "base_dir": base_dir})
        except ValidationError as error:
            raise RecipeError([_locate(line) for line in describe_validation_error(error)], source) from None

    @classmethod
    def from_yaml(cls, text: str, *, source: str | None = None, base_dir: Path | None = None) -> "Recipe":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise RecipeError([yaml_problem(error)], source) from None
        if data is None:
            raise RecipeError(["the recipe is empty"], source)
        return cls.from_data(data, source=source, base_dir=base_dir)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True, exclude={"base_dir"})
        return yaml.safe_dump(data, sort_keys=False)

    def resolve_path(self, value: str) -> Path:
        """A path from the recipe, relative to the recipe's folder when not absolute."""
        path = Path(value).expanduser()
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        return path

    def resolve(self, host: "Host", model: "LoadedModel | None" = None) -> "ValidatedRecipe":
        """Check every step and evaluation against the installed methods (and ``model``).

        Raises :class:`RecipeError` listing every problem; nothing has run when it does.
        """
        problems: list[str] = []
        steps: list[tuple[StepSpec, MethodInfo[Any], MethodConfig]] = []
        uses: list[tuple[MethodIdentity, ...]] = []
        for index, step in enumerate(self.steps, start=1):
            label = f"step {index} ({step.method})"
            resolved = _resolve(host, "compressor", step.method, step.params, label, problems, self)
            if resolved is not None:
                steps.append((step, *resolved))
                # Nested methods (a pruner's scorer and its params) are checked now, with the rest.
                uses.append(resolve_uses(host, resolved[0], resolved[1], label, problems))
                if resolved[0].cls.needs_calibration and self.calibration is None:
                    problems.append(f"{label}: needs calibration data; add a 'calibration:' section")
        evaluations: list[tuple[EvalSpec, MethodInfo[Any], MethodConfig]] = []
        for index, spec in enumerate(self.evaluate, start=1):
            label = f"evaluate {index} ({spec.metric})"
            resolved = _resolve(host, "evaluator", spec.metric, spec.params, label, problems, self)
            if resolved is not None:
                evaluations.append((spec, *resolved))
        exports: list[tuple[ExportSpec, MethodInfo[Any], MethodConfig]] = []
        for index, export in enumerate(self.export, start=1):
            resolved = _resolve(host, "exporter", export.format, export.params, f"export {index} ({export.format})",
                                problems, self)
            if resolved is not None:
                exports.append((export, *resolved))
        if self.calibration is not None and self.calibration.text is not None:
            if not self.resolve_path(self.calibration.text).is_file():
                problems.append(f"calibration: no such text file {self.resolve_path(self.calibration.text)}")
        validated = ValidatedRecipe(self, steps, evaluations, uses, exports)
        if model is not None and not problems:
            try:
                calibration = self.calibration_data(model)
            except SlimkitError as error:
                problems.append(f"calibration: {error}")
            else:
                problems.extend(validated.check_model(host, model, calibration))
        if problems:
            raise RecipeError(problems)
        return validated

    def calibration_data(self, model: "LoadedModel") -> "CalibrationData | None":
        """Draw the recipe's calibration windows with ``model``'s tokenizer (``None`` if none)."""
        spec = self.calibration
        if spec is None:
            return None
        from slimkit.core.data import TextSource, calibration_samples
        from slimkit.core.model_io import example_text

        path = self.resolve_path(spec.text) if spec.text else example_text("tinystories")
        source = TextSource(path, spec.field, spec.join, spec.collapse_blank_lines)
        return calibration_samples(
            model.tokenizer, source, n_samples=spec.n_samples, seq_len=spec.seq_len, seed=spec.seed,
            precision=spec.precision,
        )


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error in one line: where, what, and where the unclosed thing began."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and context_mark:  # where the unclosed thing began is often the real mistake
        problem += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    return f"malformed YAML{where}: {problem}"


def _locate(line: str) -> str:
    """Turn pydantic locations (``steps.0.method``) into recipe words (``step 1: method``)."""
    head, _, rest = line.partition(": ")
    parts = head.split(".")
    if len(parts) >= 2 and parts[0] in {"steps", "evaluate", "export"} and parts[1].isdigit():
        kind = {"steps": "step"}.get(parts[0], parts[0])
        field = ".".join(parts[2:]) or "(entry)"
        return f"{kind} {int(parts[1]) + 1}: {field}: {rest}"
    return line


def _resolve(
    host: "Host",
    family: str,
    name: str,
    params: Mapping[str, Any],
    label: str,
    problems: list[str],
    recipe: Recipe,
) -> "tuple[MethodInfo[Any], MethodConfig] | None":
    try:
        info = host.registry(family).get(name)  # type: ignore[arg-type]
    except UnknownMethodError as error:
        problems.append(f"{label}: {error}")
        return None
    params = _resolve_paths(info.cls.Config, params, recipe)
    try:
        return info, info.cls.Config.model_validate(params)
    except ValidationError as error:
        problems.extend(f"{label}: {line}" for line in validation_problems(error, info.cls.Config,
                                                                            info.cls.Config.__name__))
        return None


def _resolve_paths(config_cls: type[BaseModel], params: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    """Make relative file parameters (fields typed as paths) relative to the recipe's folder."""
    if recipe.base_dir is None:
        return dict(params)
    properties = config_cls.model_json_schema().get("properties", {})
    out = dict(params)
    for key, value in params.items():
        schema = properties.get(key, {})
        formats = {schema.get("format")} | {alt.get("format") for alt in schema.get("anyOf", [])}
        if "path" in formats and isinstance(value, str) and not os.path.isabs(value):
            out[key] = str(recipe.resolve_path(value))
    return out


@dataclass
class ValidatedRecipe:
    """A recipe whose methods were found and whose params were validated into configs."""

    recipe: Recipe
    steps: list[tuple[StepSpec, "MethodInfo[Any]", MethodConfig]]
    evaluations: list[tuple[EvalSpec, "MethodInfo[Any]", MethodConfig]]
    #: For each step, the methods it runs inside (its scorer), resolved and validated.
    uses: list[tuple[MethodIdentity, ...]] = dataclass_field(default_factory=list)
    #: The ``export:`` section: each entry with its exporter and validated config (run after the
    #: model is saved and evaluated; see :mod:`slimkit.core.export.section`).
    exports: list[tuple[ExportSpec, "MethodInfo[Any]", MethodConfig]] = dataclass_field(default_factory=list)

    def planned(self) -> list[PlannedStep]:
        """The steps with their nested methods and seeds, ready to check, key and run."""
        uses = self.uses or [() for _ in self.steps]
        return [PlannedStep(info, config, nested, step.seed if step.seed is not None else self.recipe.seed)
                for (step, info, config), nested in zip(self.steps, uses)]

    def check_model(
        self, host: "Host", model: "LoadedModel", calibration: "CalibrationData | None" = None
    ) -> list[str]:
        """Problems with applying this recipe to ``model`` (architecture fit, evaluator fit).

        Each step's ``check`` sees the base model and the recipe's calibration data.
        """
        problems: list[str] = []
        ctx = host.context(calibration=calibration)
        adapter = None
        if self.steps:
            try:
                adapter = host.adapter_for(model)
            except SlimkitError as error:
                return [f"model: {error}"]
        for index, ((step, _, _), planned) in enumerate(zip(self.steps, self.planned()), start=1):
            try:  # each step's check sees the scorers it declared, as its run will
                check_step(host, planned, model, adapter, calibration)
            except SlimkitError as error:
                problems.append(f"step {index} ({step.method}): {error}")
        for index, (spec, info, config) in enumerate(self.evaluations, start=1):
            try:
                guarded(info, "check", lambda: info.create().check(model, config, ctx))  # noqa: B023
            except SlimkitError as error:
                problems.append(f"evaluate {index} ({spec.metric}): {error}")
        return problems


def load_recipe(spec: str | os.PathLike[str]) -> Recipe:
    """Read a recipe file, or a bundled one as ``example:NAME``."""
    text = str(spec)
    if text.startswith(EXAMPLE_PREFIX):
        from slimkit.core.model_io import examples_root

        name = text[len(EXAMPLE_PREFIX) :]
        path = examples_root() / "recipes" / f"{name}.yaml"
        if not path.is_file():
            bundled = sorted(p.stem for p in (examples_root() / "recipes").glob("*.yaml"))
            raise SlimkitError(f"no bundled recipe {name!r}; bundled: {', '.join(bundled)}")
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise SlimkitError(f"no such recipe file: {text}")
    try:
        content = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise SlimkitError(f"cannot read recipe {path}: {error}") from None
    return Recipe.from_yaml(content, source=str(path), base_dir=path.parent)
