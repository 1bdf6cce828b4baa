"""What the calibration engine measures on the bundled model, in one process or as one rank of several.

``python -m torch.distributed.run --nproc_per_node=2 tests/distributed_worker.py OUT.pt`` runs it
as two real gloo ranks (rank 0 saves what it holds after the reductions);
tests/test_distributed.py calls :func:`measure` in its own process and compares.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

import slimkit
from slimkit.core.calibration import STATISTICS, SequentialCalibration
from slimkit.core.data import TextSource, calibration_samples
from slimkit.core.distributed import SINGLE, World
from slimkit.core.model_io import example_text
from slimkit.plugins.pruning.blocks import cosine_sum
from slimkit.plugins.quantization.awq import token_sample
from slimkit.plugins.quantization.smoothquant import SiteInputs, smoothable_sites

SAMPLES, SEQ_LEN, KEEP = 13, 32, 100  # 13 samples: the two ranks get 7 and 6


def measure(world: World) -> dict[str, Any]:
    """Every statistic the engine keeps, per layer and block, after the reductions."""
    torch.manual_seed(0)
    model = slimkit.load_model("example:stories260K")
    data = calibration_samples(model.tokenizer, TextSource(example_text()), n_samples=SAMPLES, seq_len=SEQ_LEN)
    host = slimkit.get_host()
    adapter = host.adapter_for(model)
    engine = SequentialCalibration(model, adapter, data.split(world))
    keep = token_sample(SAMPLES * SEQ_LEN, KEEP, seed=0)
    found: dict[str, Any] = {"samples": list(engine.samples)}
    for step in engine:
        refs = step.block.linears()
        sites = [site for site in smoothable_sites(model.model, step.block, {r.name for r in refs}, "test")
                 if site.foldable]
        seen = SiteInputs(model.model, sites, keep, offset=engine.first_token)
        try:
            stats = step.collect(refs, STATISTICS)
        finally:
            seen.close()
        seen.reduce(step)
        for ref in refs:
            s = stats[ref.name]
            found[ref.name] = {"tokens": s.tokens, **{name: getattr(s, name).clone() for name in STATISTICS}}
        for number, site in enumerate(sites):
            found[f"{step.block.name}/{site.name}"] = {
                "tokens": seen.tokens[number], "abs_sum": seen.abs_sum[number], "abs_max": seen.abs_max[number],
                "samples": seen.samples[number]}
        found[f"{step.block.name}/cosine"] = step.all_reduce(cosine_sum(step.inputs, step.outputs()))
    return found


def main(out: str) -> None:
    from slimkit.core.distributed.join import join, leave

    world = join()
    try:
        assert world.size == 2, world
        found = measure(world)
        if world.leader:
            torch.save(found, out)
    finally:
        leave()


if __name__ == "__main__":
    main(sys.argv[1])

__all__ = ["SINGLE", "measure"]
