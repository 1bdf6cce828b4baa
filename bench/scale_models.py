"""Synthetic Llama models for bench/scale.py: the real Llama-3 shapes with random bf16 weights,
written once as sharded safetensors folders without the whole model ever being in memory.

Every tensor is drawn from its own generator, seeded by ``seed`` and the tensor's name (so block
``i`` is the same whatever else is written) and written in row chunks, one shard per decoder
block plus one for the embedding and final norm and one for an untied output head: the writer
holds one block at most. The shards live in a pool folder per shape (``<root>/<shape>/pool``),
each written under a hidden name and renamed whole; a model of ``K`` blocks is a folder
(``<root>/<shape>/blocks-K``) of symbolic links to the pool's first ``K`` block shards with its
own ``config.json`` and index, so a shape truncated to 4 blocks for a long method is the very
first 4 blocks of the full one. Linear and embedding weights are N(0, 0.02), norms are ones:
activations stay finite through 32 blocks (checked by the benchmark's ``--check-forward``).

The tokenizer is the bundled stories260K one (512 ids, all below Llama-3's 128256): calibration
text goes through it as for any model; only the ids' range matters for random weights.

This module imports torch and safetensors only (never transformers): bench/kernels.py shadows a
package transformers probes for, and this file is imported from bench/.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are made: --dry-run and --report stay quick
    import torch

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "slimkit" / "examples" / "stories260K"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
STD = 0.02
CHUNK = 1 << 25  # elements drawn at a time (128 MiB of float32)


@dataclass(frozen=True)
class Shape:
    """A Llama-architecture shape (what config.json says)."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    def block_tensors(self, index: int) -> dict[str, tuple[int, ...]]:
        """The state-dict names and shapes of block ``index`` (LlamaForCausalLM's)."""
        p = f"model.layers.{index}."
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {p + "self_attn.q_proj.weight": (q, self.hidden), p + "self_attn.k_proj.weight": (kv, self.hidden),
                p + "self_attn.v_proj.weight": (kv, self.hidden), p + "self_attn.o_proj.weight": (self.hidden, q),
                p + "mlp.gate_proj.weight": (self.intermediate, self.hidden),
                p + "mlp.up_proj.weight": (self.intermediate, self.hidden),
                p + "mlp.down_proj.weight": (self.hidden, self.intermediate),
                p + "input_layernorm.weight": (self.hidden,), p + "post_attention_layernorm.weight": (self.hidden,)}

    def outer_tensors(self) -> dict[str, tuple[int, ...]]:
        return {"model.embed_tokens.weight": (self.vocab, self.hidden), "model.norm.weight": (self.hidden,)}

    @property
    def block_params(self) -> int:
        return sum(_numel(s) for s in self.block_tensors(0).values())

    def params(self, blocks: int | None = None) -> int:
        """Parameters of the model with ``blocks`` blocks (all by default), a tied head once."""
        head = 0 if self.tied else self.vocab * self.hidden
        return sum(_numel(s) for s in self.outer_tensors().values()) + head + \
            self.block_params * (self.layers if blocks is None else blocks)

    def config(self, blocks: int) -> dict:
        """config.json for the model truncated to ``blocks`` blocks (transformers 5 keys)."""
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
                "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "dtype": "bfloat16",
                "head_dim": self.head_dim, "hidden_act": "silu", "hidden_size": self.hidden,
                "initializer_range": STD, "intermediate_size": self.intermediate, "max_position_embeddings": 131072,
                "mlp_bias": False, "num_attention_heads": self.heads, "num_hidden_layers": blocks,
                "num_key_value_heads": self.kv_heads, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
                "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
                "tie_word_embeddings": self.tied, "use_cache": True, "vocab_size": self.vocab}


SHAPES: dict[str, Shape] = {
    # a CI-sized Llama (group size 128 divides every input width)
    "tiny": Shape(hidden=128, layers=2, intermediate=256, heads=4, kv_heads=2, head_dim=32, vocab=512, tied=True),
    "1b": Shape(2048, 16, 8192, 32, 8, 64, 128256, True),  # Llama-3.2-1B
    "3b": Shape(3072, 28, 8192, 24, 8, 128, 128256, True),  # Llama-3.2-3B
    "8b": Shape(4096, 32, 14336, 32, 8, 128, 128256, False),  # Llama-3.1-8B
}


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def random_tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """bf16 N(0, STD) (ones for a norm's weight), from a generator seeded by ``seed`` and ``name``."""
    import torch

    if len(shape) == 1:
        return torch.ones(shape, dtype=torch.bfloat16)
    out = torch.empty(shape, dtype=torch.bfloat16)
    flat = out.view(-1)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    for start in range(0, flat.numel(), CHUNK):
        piece = torch.randn(min(CHUNK, flat.numel() - start), generator=generator).mul_(STD)
        flat[start:start + piece.numel()].copy_(piece)
    return out


def _write_shard(file: Path, tensors: dict[str, tuple[int, ...]], seed: int) -> None:
    from safetensors.torch import save_file

    if file.is_file():
        return
    staging = file.with_name(f".{file.name}.tmp")
    save_file({name: random_tensor(name, shape, seed) for name, shape in tensors.items()}, str(staging),
              metadata={"format": "pt"})
    os.replace(staging, file)


def shard_plan(shape: Shape, blocks: int) -> dict[str, dict[str, tuple[int, ...]]]:
    """Shard file name -> the tensors it holds, for the model with ``blocks`` blocks."""
    plan = {"outer.safetensors": shape.outer_tensors()}
    if not shape.tied:
        plan["head.safetensors"] = {"lm_head.weight": (shape.vocab, shape.hidden)}
    for index in range(blocks):
        plan[f"block-{index:05d}.safetensors"] = shape.block_tensors(index)
    return plan


def needed_bytes(root: Path, name: str, blocks: int) -> int:
    """Bytes still to write for ``name`` with ``blocks`` blocks (shards already in the pool count 0)."""
    pool = root / name / "pool"
    return sum(2 * sum(_numel(s) for s in tensors.values())
               for file, tensors in shard_plan(SHAPES[name], blocks).items() if not (pool / file).is_file())


def ensure_model(root: Path, name: str, blocks: int | None = None, *, seed: int = 0,
                 say=print) -> Path:
    """The folder of shape ``name`` with ``blocks`` blocks (all by default), written if it is not
    there whole; returns it."""
    shape = SHAPES[name]
    blocks = shape.layers if blocks is None else blocks
    if not 1 <= blocks <= shape.layers:
        raise ValueError(f"{name} has {shape.layers} blocks; cannot take {blocks}")
    pool = root / name / "pool"
    folder = root / name / f"blocks-{blocks}"
    marker = folder / ".complete"
    stamp = json.dumps({"shape": asdict(shape), "blocks": blocks, "seed": seed, "std": STD}, sort_keys=True)
    if marker.is_file() and marker.read_text() == stamp:
        return folder
    if (pool / ".seed").is_file() and (pool / ".seed").read_text() != str(seed):
        shutil.rmtree(pool)  # shards of another seed: not this model
    pool.mkdir(parents=True, exist_ok=True)
    (pool / ".seed").write_text(str(seed))
    plan = shard_plan(shape, blocks)
    for done, (file, tensors) in enumerate(plan.items(), start=1):
        if not (pool / file).is_file():
            say(f"  writing {name} {file} ({done}/{len(plan)})")
        _write_shard(pool / file, tensors, seed)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    weight_map: dict[str, str] = {}
    total = 0
    for file, tensors in plan.items():
        (folder / file).symlink_to(pool / file)
        for tensor, dims in tensors.items():
            weight_map[tensor] = file
            total += 2 * _numel(dims)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    (folder / "config.json").write_text(json.dumps(shape.config(blocks), indent=2) + "\n")
    for file in TOKENIZER_FILES:
        shutil.copyfile(TOKENIZER / file, folder / file)
    marker.write_text(stamp)
    return folder
