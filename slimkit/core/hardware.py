"""What this machine computes natively: the CPU's vector capability and whether half precision is
faster or slower than float32 here, measured once and cached.

CPUs differ more than their names say: on an AVX2-only EPYC a bfloat16 matmul was measured 7.7x
*slower* than float32 (torch emulates it), on a Xeon with AMX several times faster. So whether
``dtype: auto`` keeps a checkpoint's bfloat16 on a CPU is decided by a measurement, never by an
assumption: :func:`half_cost` times the same matmul (a calibration-sized ``[1024, 1024] x [1024,
2048]``) in the half type and in float32 and caches the ratio per CPU model, capability, torch
version and thread count in ``~/.cache/slimkit/cpu-probe.json`` (``SLIMKIT_CACHE_DIR`` moves it).
A cache that cannot be read or written is measured again, never an error. On a GPU, float16 is
native and bfloat16 is where torch says the card supports it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

PROBE_SHAPE = (1024, 1024, 2048)  # rows x inputs x outputs: one calibration batch through an MLP projection
NATIVE_RATIO = 1.0  # half precision counts as native when it is no slower than float32


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels use here (``AVX512``, ``AVX2``, ``DEFAULT``...)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # pragma: no cover - very old or unusual builds
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_dir() -> Path:
    override = os.environ.get("SLIMKIT_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slimkit"


@dataclass(frozen=True)
class HalfCost:
    """How long a matmul takes in ``dtype`` relative to float32 on this CPU (2.0: twice as long)."""

    dtype: str
    ratio: float
    capability: str
    cached: bool

    @property
    def native(self) -> bool:
        return self.ratio <= NATIVE_RATIO

    def describe(self) -> str:
        how = "faster" if self.ratio < 1 else "slower"
        factor = 1 / self.ratio if self.ratio < 1 else self.ratio
        return (f"a {self.dtype} matmul is {factor:.1f}x {how} than float32 on this CPU ({self.capability}; "
                f"{'measured before, cached' if self.cached else 'measured now'})")


def _time(dtype: torch.dtype, repeats: int = 5) -> float:
    rows, inputs, outputs = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(rows, inputs, generator=generator).to(dtype)
    b = torch.randn(inputs, outputs, generator=generator).to(dtype)
    a @ b  # warm-up: thread pool, kernel selection
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _key(dtype: str) -> str:
    return f"{cpu_model()}|{cpu_capability()}|torch {torch.__version__}|{torch.get_num_threads()} threads|{dtype}"


def _read_cache(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict[str, float]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(temporary, path)
    except OSError:  # a read-only home: measure again next time
        pass


def half_cost(dtype: torch.dtype) -> HalfCost:
    """The measured (or cached) cost of ``dtype`` (bfloat16 or float16) matmuls against float32 on
    this CPU, at the current thread count."""
    name = str(dtype).removeprefix("torch.")
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"half_cost takes bfloat16 or float16, not {name}")
    path = cache_dir() / "cpu-probe.json"
    key = _key(name)
    cache = _read_cache(path)
    if key in cache:
        return HalfCost(name, cache[key], cpu_capability(), True)
    ratio = _time(dtype) / _time(torch.float32)
    _write_cache(path, {**_read_cache(path), key: ratio})
    return HalfCost(name, ratio, cpu_capability(), False)


def native_on(dtype: torch.dtype, device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes in ``dtype`` at least as fast as in float32, and why."""
    if dtype == torch.float32:
        return True, "float32"
    name = str(dtype).removeprefix("torch.")
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return False, f"{torch.cuda.get_device_name(device)} has no native bfloat16"
        return True, f"{name} on {torch.cuda.get_device_name(device)}"
    if device.type != "cpu":
        return True, f"{name} on {device.type}"
    cost = half_cost(dtype)
    return cost.native, cost.describe()
