"""Loading models (Hugging Face folder, GGUF file, hub id, bundled example) and saving derived ones.

Derived models are saved as ordinary Hugging Face folders (safetensors only) plus ``slimkit.json``
with their provenance, so they reload with plain ``transformers`` and carry their lineage with
them. Saving writes to a hidden temporary folder beside the target and renames it into place on
success: a failed or interrupted run never leaves a half-written model, and a full disk or a
read-only folder is one :class:`~slimkit.core.failures.FileSystemError` naming the folder.

Nothing is ever unpickled: weights are read from safetensors (folders, hub ids) or GGUF files,
and a folder or file holding only a pickle checkpoint (``pytorch_model.bin``, ``*.pt``, ...) is
refused with a :class:`~slimkit.core.errors.ModelLoadError` that says how to convert it.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import ModelLoadError, OutputExistsError, SlimkitError
from slimkit.core.memory import lean_heap

PROVENANCE_FILE = "slimkit.json"
EXAMPLE_PREFIX = "example:"
# torch.save / pickle checkpoints: loading one runs whatever code it holds, so slimkit never does
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass
class LoadedModel:
    """A model with what travels with it.

    :ivar model: the ``transformers`` model (``PreTrainedModel``).
    :ivar tokenizer: its tokenizer, or ``None`` if the source had none.
    :ivar source: what the user asked for (path, hub id or ``example:NAME``).
    :ivar path: the local folder or file it was read from, if any.
    :ivar provenance: the parsed ``slimkit.json`` of a derived model, else ``None``.
    :ivar stream: for a model opened block by block (``model`` is then a skeleton on the meta
        device), its :class:`~slimkit.core.stream.blocks.BlockStream`; ``None`` for a model in memory.
    """

    model: Any  # a transformers PreTrainedModel (an nn.Module with from/save_pretrained)
    tokenizer: Any = None
    source: str = ""
    path: Path | None = None
    provenance: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    stream: Any = None

    @property
    def architecture(self) -> str:
        return type(self.model).__name__

    @property
    def config(self) -> Any:
        return getattr(self.model, "config", None)

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the model's float weights (float32 if it has none)."""
        return next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (its first parameter's device; the CPU if it has none)."""
        if self.stream is not None:
            return self.stream.device  # type: ignore[no-any-return]
        return next((p.device for p in self.model.parameters()), torch.device("cpu"))

    def _repr_html_(self) -> str:  # notebooks: architecture, params, source, provenance steps
        from slimkit.core.present.html import loaded_model_html

        return loaded_model_html(self)


def is_causal_lm(module: nn.Module) -> bool:
    """Whether ``module`` is a causal (generating) language model rather than an encoder."""
    name = type(module).__name__
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return True
    can_generate = getattr(module, "can_generate", None)
    try:
        if callable(can_generate) and can_generate():
            return True
    except Exception:  # can_generate is a transformers detail; its absence means "no"
        pass
    return bool(getattr(getattr(module, "config", None), "is_decoder", False))


def examples_root() -> Path:
    """The folder of bundled examples (models, text and recipes) inside the package."""
    return Path(str(importlib.resources.files("slimkit") / "examples"))


def examples() -> dict[str, Path]:
    """Bundled example models by name."""
    return {p.name: p for p in sorted(examples_root().iterdir()) if (p / "config.json").is_file()}


def spec_path(spec: str | os.PathLike[str]) -> Path | None:
    """The path a model spec names on this machine: a bundled example's folder (``None`` for an
    unknown example), else the spec as a path, which may not exist (a hub id)."""
    text = str(spec)
    if text.startswith(EXAMPLE_PREFIX):
        return examples().get(text[len(EXAMPLE_PREFIX):])
    return Path(text).expanduser()


def example_text(name: str = "tinystories") -> Path:
    """Path of a bundled example text file."""
    files = sorted((examples_root() / name).glob("*.txt"))
    if not files:
        raise SlimkitError(f"no bundled example text {name!r}")
    return files[0]


def model_class(config: Any) -> Any:
    import transformers

    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if isinstance(cls, type):
            return cls
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if getattr(config, "model_type", None) in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return AutoModelForCausalLM
    return AutoModel


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_tokenizer(*args: Any, **kwargs: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(*args, **kwargs)
    except Exception:  # a model without a tokenizer is still a model (size, latency, pruning)
        return None


def _read_provenance(folder: Path) -> dict[str, Any] | None:
    file = folder / PROVENANCE_FILE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{file} is not valid JSON: {error}") from None


def _pickles(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)


def pickle_refusal(path: Path, pickles: list[str]) -> ModelLoadError:
    """slimkit's answer to a pickle checkpoint: never loaded, and how to convert it (one line)."""
    folder = path if path.is_dir() else path.parent
    what = f"{folder} holds only pickle weights ({', '.join(pickles)})" if path.is_dir() else \
        f"{path} is a pickle checkpoint"
    refusal = f"{what}; slimkit never unpickles (loading a pickle can run any code in it)"
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = None
    if path.is_file() and isinstance(config, dict) and any(folder.glob("*.safetensors")):
        return ModelLoadError(f"{refusal}: load its folder {folder} instead, which has safetensors weights")
    if not isinstance(config, dict):
        return ModelLoadError(f"{refusal}: give it a Hugging Face folder with config.json and *.safetensors "
                              f"weights, a .gguf file or a hub id")
    named = config.get("architectures")
    cls = named[0] if isinstance(named, list) and named and str(named[0]).isidentifier() else "AutoModelForCausalLM"
    command = f"import transformers as t; t.{cls}.from_pretrained({str(folder)!r}).save_pretrained({str(folder)!r})"
    return ModelLoadError(f'{refusal}: if you trust the file, convert it to safetensors in place once: '
                          f'python -c "{command}"')


def _load_folder(folder: Path, source: str, dtype: torch.dtype) -> LoadedModel:
    from transformers import AutoConfig

    has_safetensors = any(folder.glob("*.safetensors"))
    pickles = [] if has_safetensors else _pickles(folder)
    if pickles:
        raise pickle_refusal(folder, pickles)
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} is not a model folder: it has no config.json")
    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as error:
        raise ModelLoadError(f"{folder}/config.json is not a usable model config: {_first_line(error)}") from None
    if not has_safetensors:
        raise ModelLoadError(f"{folder} has a config.json but no weights (*.safetensors)")
    cls = model_class(config)
    provenance = _read_provenance(folder)
    from slimkit.core.storage import load_replaced, section_of

    section = section_of(provenance) if provenance is not None else None
    if section is not None:
        model = load_replaced(folder, section, cls, config, dtype)
        return LoadedModel(model, load_tokenizer(folder), source, folder, provenance)
    compressed = _compressed_tensors(config)
    try:
        # safetensors only: a pickle beside them is never read (see pickle_refusal)
        with warnings.catch_warnings():  # "the model's own quantization_config will be used": as meant
            warnings.filterwarnings("ignore", message=".*already has a `quantization_config`")
            model = cls.from_pretrained(folder, dtype=dtype, use_safetensors=True, **compressed)
    except Exception as error:
        raise ModelLoadError(f"could not load the model in {folder}: {_first_line(error)}") from None
    if compressed:
        _drop_quantization(model)
    model.eval()
    return LoadedModel(model, load_tokenizer(folder), source, folder, provenance)


def _compressed_tensors(config: Any) -> dict[str, Any]:
    """``from_pretrained`` arguments for a compressed-tensors folder (vLLM's format): its weights
    dequantized on load, as a GGUF's are, by the one path that loads every grid (asymmetric
    zero points fail transformers' default path: see docs/export_compressed_tensors.md)."""
    settings = getattr(config, "quantization_config", None)
    method = settings.get("quant_method") if isinstance(settings, dict) else getattr(settings, "quant_method", None)
    if str(method) != "compressed-tensors":
        return {}
    if importlib.util.find_spec("compressed_tensors") is None:
        raise ModelLoadError("this folder is in compressed-tensors format: loading it needs "
                             "pip install 'slimkit[compressed-tensors]'")
    from transformers import CompressedTensorsConfig

    return {"quantization_config": CompressedTensorsConfig(dequantize=True)}


def _drop_quantization(model: Any) -> None:
    """The weights are float now: drop the loader's quantization marker so the model saves as float."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False


def _load_gguf(file: Path, source: str, dtype: torch.dtype) -> LoadedModel:
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(
            f"loading {file.name} needs the gguf package: pip install 'slimkit[gguf]'"
        )
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(file.parent, gguf_file=file.name)
        model = model_class(config).from_pretrained(file.parent, gguf_file=file.name, dtype=dtype)
    except Exception as error:
        raise ModelLoadError(f"could not load GGUF file {file}: {_first_line(error)}") from None
    _drop_quantization(model)  # the weights are dequantized now
    model.eval()
    tokenizer = load_tokenizer(file.parent, gguf_file=file.name)
    if tokenizer is None and (file.parent / "tokenizer").is_dir():
        tokenizer = load_tokenizer(file.parent / "tokenizer")
    return LoadedModel(model, tokenizer, source, file, None, {"gguf_file": file.name})


def _load_hub(repo_id: str, dtype: torch.dtype) -> LoadedModel:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(repo_id)
        model = model_class(config).from_pretrained(repo_id, dtype=dtype, use_safetensors=True)
    except Exception as error:
        raise ModelLoadError(
            f"{repo_id!r} is not a local path and could not be loaded from the Hugging Face hub "
            f"(offline, private, or no safetensors weights): {_first_line(error)}"
        ) from None
    model.eval()
    return LoadedModel(model, load_tokenizer(repo_id), repo_id, None, None)


def load_model(spec: str | os.PathLike[str], *, dtype: torch.dtype | str = torch.float32,
               device: str | torch.device | None = None) -> LoadedModel:
    """Load a model from a folder, a ``.gguf`` file, ``example:NAME`` or a hub id (``org/name``).

    Local paths win over hub ids; a path that does not exist is an error, never a hub lookup,
    when it is clearly a path (starts with ``.``, ``/`` or ``~``, or ends in ``.gguf``).

    :param dtype: ``float32`` (default), ``bfloat16``, ``float16``, a torch dtype, or ``auto``:
        the checkpoint's own, where the device computes it natively (see :mod:`slimkit.core.runtime`).
    :param device: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto``; checked before loading.
    """
    lean_heap()  # before the first large tensor (see slimkit.core.memory)
    from slimkit.core.runtime import checkpoint_dtype, resolve

    text = str(spec)
    folder = spec_path(text)
    wanted = resolve(dtype, device, checkpoint=checkpoint_dtype(folder) if dtype == "auto" and folder else None)
    loaded = _load(text, wanted.dtype)
    if wanted.device.type != "cpu":
        loaded.model.to(wanted.device)
    if wanted.reason:
        loaded.extras["dtype_reason"] = wanted.reason
    return loaded


def _load(text: str, dtype: torch.dtype) -> LoadedModel:
    if text.startswith(EXAMPLE_PREFIX):
        name = text[len(EXAMPLE_PREFIX) :]
        bundled = examples()
        if name not in bundled:
            raise ModelLoadError(f"no bundled example {name!r}; bundled: {', '.join(bundled)}")
        return _load_folder(bundled[name], text, dtype)
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_folder(path, text, dtype)
    if path.is_file():
        if path.suffix == ".gguf":
            return _load_gguf(path, text, dtype)
        if path.name == "config.json":
            return _load_folder(path.parent, text, dtype)
        if path.suffix in PICKLE_SUFFIXES:
            raise pickle_refusal(path, [path.name])
        raise ModelLoadError(f"{path} is a file but not a model (expected a folder or a .gguf file)")
    if text.startswith((".", "/", "~")) or text.endswith(".gguf") or text.count("/") != 1:
        raise ModelLoadError(f"no such model folder or file: {text}")
    return _load_hub(text, dtype)


def disk_bytes(path: Path | None) -> int | None:
    """Bytes of the weight files of a saved model (safetensors, or the file itself for GGUF)."""
    if path is None:
        return None
    if path.is_file():
        return path.stat().st_size
    files = list(path.glob("*.safetensors")) or list(path.glob("*.bin"))
    return sum(f.stat().st_size for f in files) if files else None


def check_output(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse an output folder that exists (unless ``overwrite``) before any work starts."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"output {path} exists and is not a folder")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output folder {path} already exists (use --overwrite to replace it)")
    return path


def save_model(
    loaded: LoadedModel,
    out: str | os.PathLike[str],
    provenance: dict[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Save ``loaded`` as a Hugging Face folder with ``slimkit.json``, atomically.

    The folder is written under a temporary name beside ``out`` and renamed into place; an
    existing ``out`` is only replaced (when ``overwrite``) after the new one is complete.

    :raises FileSystemError: the folder cannot be written (disk full, read-only, permission);
        the temporary folder is gone and an existing ``out`` is as it was.
    """
    target = check_output(out, overwrite)
    from slimkit.core.atomic import write_staged
    from slimkit.core.storage import LEGACY_SECTION, SECTION, has_replaced_modules, save_replaced

    def write(staging: Path) -> None:
        provenance.pop(LEGACY_SECTION, None)  # a record of the parent's files, not this model's
        provenance.pop(SECTION, None)
        if has_replaced_modules(loaded.model):  # quantized / low-rank layers, checksummed: see core.storage
            provenance[SECTION] = save_replaced(loaded.model, staging)
        else:
            loaded.model.save_pretrained(staging, safe_serialization=True)
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(staging)
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")

    write_staged(target, "folder", write, what="cannot save the model to")
    return target
