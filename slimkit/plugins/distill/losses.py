"""Distillation losses.

* **Logits** (Hinton et al. 2015): ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` per token, averaged
  over tokens; ``T²`` keeps the gradient scale independent of the temperature. Optionally mixed
  with the language-modelling loss on the text: ``(1 - w) · KD + w · CE``.
  :func:`chunked_logit_loss` computes the same mix from the models' last hidden states, a chunk
  of tokens at a time through the output heads, each chunk recomputed in the backward pass
  (``torch.utils.checkpoint``): the ``[batch, seq, vocab]`` float32 logits (and their softmaxes
  and gradients, 201 MB each for SmolLM2 at 4x256 tokens) never exist whole.
* **Hidden states**: for every student block, the mean squared error between its output
  (through a learned linear projection where the widths differ) and the output of the teacher
  block it is mapped to, divided by the teacher output's mean square (so blocks with large
  activations do not dominate). Student block ``i`` of ``S`` maps to teacher block
  ``round((i + 1) · T / S) - 1`` of ``T``: the last to the last, the rest evenly spaced.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


def logit_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(teacher ‖ student)`` at temperature ``T``, mean over tokens (``[..., vocab]``)."""
    s = F.log_softmax(student.float() / temperature, dim=-1).reshape(-1, student.shape[-1])
    t = F.log_softmax(teacher.float() / temperature, dim=-1).reshape(-1, teacher.shape[-1])
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


def lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of ``logits`` (``[batch, seq, vocab]``) on ``ids``."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))


def chunked_logit_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                       student_head: Callable[[torch.Tensor], torch.Tensor],
                       teacher_head: Callable[[torch.Tensor], torch.Tensor], ids: torch.Tensor, temperature: float,
                       lm_weight: float, chunk: int) -> torch.Tensor:
    """``(1 - w) · T² · KL + w · CE`` as :func:`logit_loss` and :func:`lm_loss` mix them, from the
    last hidden states (``[batch, seq, width]``), ``chunk`` tokens at a time."""
    batch, seq = ids.shape
    student_flat = student_hidden.reshape(batch * seq, -1)
    teacher_flat = teacher_hidden.reshape(batch * seq, -1)
    targets = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], dim=1).reshape(-1)  # none after the last

    def piece(hidden: torch.Tensor, wanted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = student_head(hidden).float()
        with torch.no_grad():
            teacher = F.log_softmax(teacher_head(wanted).float() / temperature, dim=-1)
        kl = F.kl_div(F.log_softmax(logits / temperature, dim=-1), teacher, log_target=True, reduction="sum")
        total = kl * (temperature ** 2 / (batch * seq))
        if lm_weight > 0:
            ce = F.cross_entropy(logits, target, ignore_index=-100, reduction="sum") / (batch * (seq - 1))
            total = (1 - lm_weight) * total + lm_weight * ce
        return total

    pieces = [checkpoint(piece, student_flat[start:start + chunk], teacher_flat[start:start + chunk],
                         targets[start:start + chunk], use_reentrant=False)
              for start in range(0, batch * seq, chunk)]
    return torch.stack(pieces).sum()


def block_map(student_blocks: int, teacher_blocks: int) -> list[int]:
    """The teacher block each student block learns from (see the module docstring)."""
    return [round((i + 1) * teacher_blocks / student_blocks) - 1 for i in range(student_blocks)]


class HiddenStateLoss(nn.Module):
    """Per-block hidden-state MSE with a learned projection per block where widths differ."""

    def __init__(self, student_blocks: int, teacher_blocks: int, student_width: int, teacher_width: int) -> None:
        super().__init__()
        self.mapping = block_map(student_blocks, teacher_blocks)
        self.projections = nn.ModuleList(
            nn.Identity() if student_width == teacher_width else nn.Linear(student_width, teacher_width, bias=False)
            for _ in range(student_blocks)
        )

    def forward(self, student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``student``/``teacher``: ``output_hidden_states`` tuples (embeddings first, then one
        per block)."""
        losses = []
        for index, (projection, target) in enumerate(zip(self.projections, self.mapping, strict=True)):
            wanted = teacher[target + 1].float()
            got = projection(student[index + 1].float())
            losses.append(F.mse_loss(got, wanted) / wanted.square().mean().clamp(min=1e-12))
        return torch.stack(losses).mean()
