"""Importance scores: the output of a scorer, cacheable and inspectable on its own.

Scores are keyed by the name of what they score: a linear layer's name for ``weight`` scores
(same shape as the weight, ``[out, in]``), a block name for ``neuron`` (one per MLP intermediate
neuron) and ``head`` scores (one per attention head), and ``"blocks"`` for ``block`` scores (one
per block). They save to safetensors with their provenance in the file's metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from slimkit.core.errors import DataError


@dataclass
class Scores:
    """Scores from one scorer run."""

    scorer: str
    granularity: str
    values: dict[str, torch.Tensor]
    config: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.values[key]

    def __contains__(self, key: object) -> bool:
        return key in self.values

    def summary(self) -> dict[str, dict[str, float]]:
        """Per-key numel, mean, min and max: a quick look without plotting."""
        out = {}
        for key, tensor in self.values.items():
            t = tensor.detach().float()
            out[key] = {
                "numel": float(t.numel()),
                "mean": float(t.mean()),
                "min": float(t.min()),
                "max": float(t.max()),
            }
        return out

    def save(self, path: str | Path) -> Path:
        """Write the scores to a safetensors file, scorer, granularity and config in its metadata."""
        path = Path(path)
        metadata = {
            "slimkit.scorer": self.scorer,
            "slimkit.granularity": self.granularity,
            "slimkit.config": json.dumps(dict(self.config), sort_keys=True),
        }
        tensors = {key: value.detach().contiguous().cpu() for key, value in self.values.items()}
        save_file(tensors, str(path), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Scores":
        """Read scores :meth:`save` wrote; :class:`~slimkit.DataError` if ``path`` is not such a file."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"no scores file at {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            values = load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise DataError(f"{path} is not a slimkit scores file: {error}") from None
        if "slimkit.scorer" not in metadata:
            raise DataError(f"{path} is a safetensors file but has no slimkit scores metadata")
        return cls(
            scorer=metadata["slimkit.scorer"],
            granularity=metadata["slimkit.granularity"],
            values=values,
            config=json.loads(metadata.get("slimkit.config", "{}")),
        )


def checked_scores(info: Any, produce: Callable[[], Any], refs: Iterable[Any]) -> Any:
    """Run a scorer (``produce``) and check what it gave, so that a plugin's mistake is reported
    as one line naming the scorer and its plugin, not as a failure deep inside the pruner.

    ``info`` is the scorer's registry entry; ``refs`` the projections its weight scores must fit:
    each weight score has its layer's ``[out, in]`` shape.
    """
    from slimkit.core.errors import PluginError, SlimkitError
    from slimkit.core.identity import plugin_failure, plugin_label

    try:
        result = produce()
    except SlimkitError:
        raise
    except Exception as error:  # the plugin's own bug: one line naming it, the traceback chained
        raise PluginError(plugin_failure(info, "score", error)) from error
    values = result.values if isinstance(result, Scores) else result
    if not isinstance(values, Mapping):
        raise PluginError(f"{plugin_label(info)} returned {type(result).__name__}, not scores by name")
    if getattr(info.cls, "granularity", None) != "weight":
        return result
    for ref in refs:
        got = values.get(ref.name)
        if got is None:
            continue
        if not isinstance(got, torch.Tensor):
            raise PluginError(f"{plugin_label(info)} returned a {type(got).__name__} for {ref.name}, not a tensor")
        expected = (ref.out_features, ref.in_features)
        if tuple(got.shape) != expected:
            raise PluginError(f"{plugin_label(info)} returned scores of shape {list(got.shape)} for {ref.name}, "
                              f"whose weight is {list(expected)} ([out, in])")
    return result
