"""STS Benchmark: Spearman correlation between cosine similarity and human similarity scores.

The protocol of sentence-transformers: each sentence is encoded on its own (padding, truncation
to ``max_length``), the encoder's last hidden states are mean-pooled over the attention mask and
L2-normalised, and the cosine of each pair's two embeddings is compared with its gold score
(0-5) by Spearman rank correlation (average ranks for ties, then Pearson of the ranks), x100.

The data file is the STS-B csv as distributed: TAB-separated lines
``genre, file, year, id, score, sentence1, sentence2`` (some lines carry extra trailing source
columns, which are ignored). It is split on TAB only, never parsed as quoted CSV, because the
sentences contain unbalanced quotes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from slimkit import BaseEvaluator, ConfigError, DataError, MethodConfig, hookimpl, is_causal_lm, sha256_bytes

FORMAT = "TAB-separated: genre, file, year, id, score 0-5, sentence1, sentence2"


class StsbConfig(MethodConfig):
    path: str | None = Field(
        None, description=f"STS-B csv file to evaluate on ({FORMAT}), e.g. sts-test.csv."
    )
    max_pairs: int | None = Field(None, ge=1, description="Evaluate only the first N pairs.")
    batch_size: int = Field(64, ge=1, le=4096, description="Sentences per forward pass.")
    max_length: int = Field(128, ge=2, le=131072, description="Truncate each sentence to this many tokens.")


def read_pairs(path: Path, max_pairs: int | None = None) -> tuple[list[str], list[str], list[float]]:
    """Sentence pairs and gold scores from an STS-B file; a bad line is a :class:`DataError`."""
    if not path.is_file():
        raise DataError(f"no such STS-B file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"could not read {path}: {error}") from None
    first: list[str] = []
    second: list[str] = []
    scores: list[float] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 7:
            raise DataError(
                f"{path}:{number}: expected at least 7 TAB-separated fields ({FORMAT}), got {len(fields)}"
            )
        try:
            score = float(fields[4])
        except ValueError:
            raise DataError(f"{path}:{number}: score {fields[4]!r} is not a number") from None
        if not 0.0 <= score <= 5.0:
            raise DataError(f"{path}:{number}: score {score} is outside 0-5")
        if not fields[5].strip() or not fields[6].strip():
            raise DataError(f"{path}:{number}: empty sentence")
        first.append(fields[5])
        second.append(fields[6])
        scores.append(score)
        if max_pairs is not None and len(scores) >= max_pairs:
            break
    if len(scores) < 2:
        raise DataError(f"{path} has {len(scores)} sentence pair(s); Spearman needs at least 2")
    if len(set(scores)) < 2:
        raise DataError(f"{path}: every gold score is {scores[0]}; Spearman needs scores that differ")
    return first, second, scores


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, tied values sharing the mean of their ranks (float64)."""
    values = values.detach().to(torch.float64).flatten()
    n = values.numel()
    order = torch.argsort(values, stable=True)
    ordered = values[order]
    starts_group = torch.ones(n, dtype=torch.bool)
    starts_group[1:] = ordered[1:] != ordered[:-1]
    group = torch.cumsum(starts_group.long(), 0) - 1
    starts = torch.nonzero(starts_group).flatten()
    ends = torch.cat([starts[1:], torch.tensor([n])])  # exclusive
    mean_rank = (starts + ends - 1).to(torch.float64) / 2 + 1
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = mean_rank[group]
    return ranks


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation in float64; NaN when either side is constant."""
    x = x.to(torch.float64) - x.to(torch.float64).mean()
    y = y.to(torch.float64) - y.to(torch.float64).mean()
    denominator = torch.sqrt((x * x).sum() * (y * y).sum())
    if float(denominator) == 0.0:
        return float("nan")
    return float((x * y).sum() / denominator)


def spearman(x, y) -> float:
    """Spearman rank correlation of two equally long sequences (scipy's ``spearmanr`` statistic)."""
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    y = torch.as_tensor(y, dtype=torch.float64).flatten()
    if x.numel() != y.numel():
        raise ValueError(f"spearman needs equally long inputs, got {x.numel()} and {y.numel()}")
    return pearson(average_ranks(x), average_ranks(y))


def encode(model, sentences: list[str], config: StsbConfig) -> torch.Tensor:
    """Mean-pooled, L2-normalised float32 embeddings of ``sentences`` (one batch)."""
    encoder = getattr(model.model, "base_model", model.model)
    device = next(encoder.parameters()).device
    batch = model.tokenizer(
        sentences, padding=True, truncation=True, max_length=config.max_length, return_tensors="pt"
    )
    inputs = {key: batch[key].to(device) for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}
    output = encoder(**inputs)
    hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
    mask = inputs["attention_mask"].unsqueeze(-1).to(torch.float32)
    pooled = (hidden.to(torch.float32) * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1).cpu()


class StsbEvaluator(BaseEvaluator):
    """STS Benchmark Spearman x100 of a sentence encoder (mean pooling, cosine similarity)."""

    name = "stsb"
    metrics = ("spearman", "pairs")
    version = 1
    Config = StsbConfig

    def check(self, model, config, ctx):
        if config.path is None:
            raise ConfigError(f"stsb needs path= to an STS-B csv ({FORMAT})")
        if is_causal_lm(model.model):
            raise ConfigError(f"stsb needs a sentence encoder; {model.architecture} is a causal language model")
        if model.tokenizer is None:
            raise ConfigError(f"stsb needs a tokenizer and {model.source or model.architecture} has none")
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and config.max_length > limit:
            raise ConfigError(f"max_length {config.max_length} exceeds the model's context of {limit} tokens")
        read_pairs(Path(config.path).expanduser(), config.max_pairs)  # fail now on a bad file

    def evaluate(self, model, config, ctx):
        path = Path(config.path).expanduser()
        first, second, gold = read_pairs(path, config.max_pairs)
        ctx.used_data(sha256_bytes(path.read_bytes()))
        count = len(gold)
        total = -(-count // config.batch_size)
        cosines = []
        was_training = model.model.training
        model.model.eval()
        try:
            with torch.inference_mode():
                for index, start in enumerate(range(0, count, config.batch_size), start=1):
                    stop = start + config.batch_size
                    a = encode(model, first[start:stop], config)
                    b = encode(model, second[start:stop], config)
                    cosines.append((a * b).sum(-1))
                    ctx.report("batches", index, total)
        finally:
            model.model.train(was_training)
        return {"spearman": 100.0 * spearman(torch.cat(cosines), gold), "pairs": float(count)}


@hookimpl
def register_evaluators(register):
    register(StsbEvaluator)
