"""Where a model runs and in what precision: ``dtype`` and ``device`` as the command line, the Python
API, a recipe's ``runtime:`` section and the panel give them, resolved against the checkpoint and
the hardware.

* ``dtype``: ``float32`` (the default: what slimkit has always computed in), ``bfloat16``,
  ``float16``, or ``auto``, the checkpoint's own dtype *where the device computes it natively*
  (:func:`slimkit.core.hardware.native_on`: measured on a CPU), else float32, saying why. A GGUF
  file has no float dtype of its own: auto reads it as float32.
* ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (the first GPU if torch sees one, else the
  CPU). A GPU that is not there is one clear error, before anything loads.

Methods run where the model's blocks are; their statistics (Hessians, norms) accumulate in
float32/float64 whatever the weights' precision, and the weights they change keep the model's dtype.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from slimkit.core.errors import DeviceError

DTYPES = ("auto", "bfloat16", "float16", "float32")
DtypeName = Literal["auto", "bfloat16", "float16", "float32"]
_TORCH = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


class RuntimeSpec(BaseModel):
    """A recipe's ``runtime:`` section (and what ``--dtype``/``--device`` give)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: DtypeName = Field(default="float32", description="Weights' precision: float32, bfloat16, float16, or auto "
                             "(the checkpoint's, where this device computes it natively, else float32).")
    device: str = Field(default="cpu", pattern=r"^(cpu|auto|cuda(:\d+)?)$",
                        description="Where the model runs: cpu, cuda, cuda:N, or auto (a GPU if there is one).")
    stream: bool = Field(default=False, description="Never hold the whole model: read each block from the "
                         "input's safetensors shards when its turn comes and write it to the output at once.")
    max_memory: str | None = Field(default=None, description="Memory budget, e.g. 6GiB (default: what the machine "
                                   "has available). A run that would not fit in memory streams; one that would "
                                   "not fit streamed is refused before it starts.")
    ranks: int = Field(default=1, ge=1, le=512, description="Data-parallel ranks on this machine "
                       "(torch.distributed: gloo on CPUs, NCCL on GPUs): the calibration samples are divided among "
                       "them, statistics summed at every block; rank 0 saves and records.")


@dataclass(frozen=True)
class Placement:
    """A resolved runtime: the torch dtype and device, and why that dtype (for ``auto``)."""

    dtype: torch.dtype
    device: torch.device
    reason: str = ""

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)


def resolve_device(text: str | torch.device | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` as a torch device; :class:`DeviceError` if it is not here."""
    if isinstance(text, torch.device):
        text = str(text)
    text = (text or "cpu").strip().lower()
    if text == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
            raise DeviceError(f"device {text}: torch sees no CUDA GPU here ({build}); use --device cpu "
                              "(or auto, which takes a GPU only when there is one)")
        index = int(text.partition(":")[2] or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"device {text}: there {'is' if count == 1 else 'are'} only {count} GPU(s) "
                              f"(cuda:0..cuda:{count - 1})")
        return torch.device("cuda", index)
    raise DeviceError(f"unknown device {text!r}: use cpu, cuda, cuda:N or auto")


def checkpoint_dtype(spec: str | Path) -> torch.dtype | None:
    """The float dtype a model folder's ``config.json`` says its weights are in, or ``None``
    (a GGUF file, a hub id, no or an unreadable config)."""
    path = Path(spec).expanduser()
    config = path / "config.json" if path.is_dir() else path if path.name == "config.json" else None
    if config is None:
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    value = data.get("dtype") or data.get("torch_dtype") if isinstance(data, dict) else None
    return _TORCH.get(str(value).removeprefix("torch.")) if value else None


def resolve(dtype: str | torch.dtype | None = "float32", device: str | torch.device | None = "cpu", *,
            checkpoint: torch.dtype | None = None) -> Placement:
    """The dtype and device to load a model with. ``checkpoint`` is the weights' own dtype (for
    ``auto``)."""
    where = resolve_device(device)
    if isinstance(dtype, torch.dtype):
        if dtype not in _TORCH.values():
            raise DeviceError(f"dtype {dtype} is not one of {', '.join(DTYPES[1:])}")
        return Placement(dtype, where)
    name = (dtype or "float32").strip().lower()
    if name not in DTYPES:
        raise DeviceError(f"unknown dtype {name!r}: use {', '.join(DTYPES)}")
    if name != "auto":
        return Placement(_TORCH[name], where)
    if checkpoint is None or checkpoint == torch.float32:
        return Placement(torch.float32, where, "auto: the checkpoint is float32 (or has no float dtype)")
    from slimkit.core.hardware import native_on

    native, why = native_on(checkpoint, where)
    chosen = checkpoint if native else torch.float32
    return Placement(chosen, where, f"auto: {'kept' if native else 'float32 instead of'} the checkpoint's "
                                    f"{dtype_name(checkpoint)}: {why}")


def placement_record(loaded: Any) -> dict[str, str]:
    """What a step records of where it ran: the model's dtype and device, and the CPU's capability."""
    from slimkit.core.hardware import cpu_capability

    record = {"dtype": dtype_name(loaded.dtype), "device": str(loaded.device), "cpu_capability": cpu_capability()}
    if getattr(loaded, "stream", None) is not None:
        record["streamed"] = "block by block"
    return record
