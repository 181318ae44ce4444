"""Running a network endpoint by endpoint, and an inception block branch by branch (shared by the 3D I3D
and its 2D twin)."""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

import torch
from torch import nn


def run_endpoints(model: nn.Module, endpoint_names: Sequence[str], x: torch.Tensor,
                  endpoints: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
    """Feed ``x`` through ``model``'s submodules named ``endpoint_names``, in order, up to the last one wanted.

    Returns ``{name: activation}`` for ``endpoints`` (all of ``endpoint_names`` when None).
    A name that is not in ``endpoint_names`` raises ``ValueError``.
    """
    wanted = set(endpoint_names if endpoints is None else endpoints)
    unknown = wanted - set(endpoint_names)
    if unknown:
        raise ValueError(f"unknown or unbuilt endpoints {sorted(unknown)}; this model has {list(endpoint_names)}")
    out: Dict[str, torch.Tensor] = {}
    for name in endpoint_names:
        x = getattr(model, name)(x)
        if name in wanted:
            out[name] = x
            if len(out) == len(wanted):
                break
    return out


def run_branches(x: torch.Tensor, branches: Iterable[Sequence[nn.Module]]) -> torch.Tensor:
    """An inception block: ``x`` through each branch's layers in order, the outputs concatenated on channels (dim 1)."""
    outputs = []
    for layers in branches:
        y = x
        for layer in layers:
            y = layer(y)
        outputs.append(y)
    return torch.cat(outputs, dim=1)
