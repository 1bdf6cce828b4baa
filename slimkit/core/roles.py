"""The role vocabulary: what each projection of a transformer block does, named once for all methods.

Architecture adapters tag every block projection with a :data:`Role`; methods choose the layers
they work on by role (``roles=("up", "down")``), never by module name, so one method serves every
model family. Pruning, quantization and low-rank configs all take their ``roles`` fields from here.
"""

from __future__ import annotations

from typing import Literal

#: A block projection: attention query/key/value (``qkv`` when fused into one layer) and output,
#: MLP up, gate (gated MLPs only) and down.
Role = Literal["q", "k", "v", "qkv", "o", "up", "gate", "down"]

#: Every role, in block order: the default ``roles`` of the methods that take one.
ALL_ROLES: tuple[Role, ...] = ("q", "k", "v", "qkv", "o", "up", "gate", "down")

#: The attention projections' roles.
ATTENTION_ROLES: tuple[Role, ...] = ("q", "k", "v", "qkv", "o")

#: The MLP projections' roles.
MLP_ROLES: tuple[Role, ...] = ("up", "gate", "down")
