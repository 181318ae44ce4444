"""Native state_dicts <-> other ports' layouts: the tensors, by the key table of
:mod:`i3d_convert.names.layouts`.

``piergiaj`` has a batch-norm scale and a step counter that DeepMind's network
lacks: written as ones and zero one way, the scale folded into the conv kernel
the other way.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Mapping

import torch

from i3d_convert.errors import MappingError
from i3d_convert.names.layouts import (
    BETA, BIAS, MEAN, SCALE, STEPS, VAR, WEIGHT, piergiaj_key_table, weights_shape,
)


def native_to_piergiaj(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Keys and extra tensors that load strictly into piergiaj's ``InceptionI3d``."""
    in_channels, num_classes = weights_shape(state_dict, require_classifier=True)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    used = set()
    for unit in piergiaj_key_table(in_channels, num_classes):
        src, dst = unit.native, unit.piergiaj
        out[dst[WEIGHT]] = state_dict[src[WEIGHT]]
        used.add(src[WEIGHT])
        if BIAS in src:
            out[dst[BIAS]] = state_dict[src[BIAS]]
            used.add(src[BIAS])
        if BETA in src:
            beta = state_dict[src[BETA]]
            out[dst[SCALE]] = torch.ones_like(beta)
            out[dst[BETA]] = beta
            out[dst[MEAN]] = state_dict[src[MEAN]]
            out[dst[VAR]] = state_dict[src[VAR]]
            out[dst[STEPS]] = torch.tensor(0, dtype=torch.long)
            used.update(src[role] for role in (BETA, MEAN, VAR))
    extra = sorted(set(state_dict) - used)
    if extra:
        raise MappingError(f"state_dict key {extra[0]!r} has no place in the piergiaj layout")
    return out


def piergiaj_to_native(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """The inverse. A batch-norm scale that is not all ones is folded exactly into the
    conv kernel and the running mean (``g*(conv(x,w)-m)/s == (conv(x,g*w)-g*m)/s``)."""
    in_channels, num_classes = weights_shape(state_dict, layout="piergiaj", require_classifier=True)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    used = set()

    def take(key: str) -> torch.Tensor:
        if key not in state_dict:
            raise MappingError(f"piergiaj state_dict lacks {key!r}")
        used.add(key)
        return state_dict[key]

    for unit in piergiaj_key_table(in_channels, num_classes):
        src, dst = unit.piergiaj, unit.native
        weight = take(src[WEIGHT])
        if BIAS in src:
            out[dst[BIAS]] = take(src[BIAS])
        if BETA in src:
            gamma = take(src[SCALE])
            mean = take(src[MEAN])
            if not torch.all(gamma == 1):
                weight = weight * gamma.view(-1, 1, 1, 1, 1)
                mean = mean * gamma
            out[dst[BETA]] = take(src[BETA])
            out[dst[MEAN]] = mean
            out[dst[VAR]] = take(src[VAR])
            if src[STEPS] in state_dict:
                used.add(src[STEPS])
        out[dst[WEIGHT]] = weight
    extra = sorted(set(state_dict) - used)
    if extra:
        raise MappingError(f"unknown piergiaj key {extra[0]!r}")
    return out


Converter = Callable[[Mapping[str, torch.Tensor]], "OrderedDict[str, torch.Tensor]"]
#: Layouts a native state_dict can be written in (``"native"`` besides).
LAYOUTS: Dict[str, Converter] = {"piergiaj": native_to_piergiaj}
FROM_LAYOUTS: Dict[str, Converter] = {"piergiaj": piergiaj_to_native}


def _convert(state_dict: Mapping[str, torch.Tensor], layout: str,
             converters: Mapping[str, Converter]) -> "OrderedDict[str, torch.Tensor]":
    if layout == "native":
        return OrderedDict(state_dict)
    if layout not in converters:
        raise MappingError(f"unknown layout {layout!r}; known: native, {', '.join(converters)}")
    return converters[layout](state_dict)


def to_layout(state_dict: Mapping[str, torch.Tensor], layout: str) -> "OrderedDict[str, torch.Tensor]":
    """A native state_dict in ``layout``'s keys and shapes (``"native"``: unchanged)."""
    return _convert(state_dict, layout, LAYOUTS)


def from_layout(state_dict: Mapping[str, torch.Tensor], layout: str) -> "OrderedDict[str, torch.Tensor]":
    """A state_dict in ``layout``'s keys and shapes as a native one (``"native"``: unchanged)."""
    return _convert(state_dict, layout, FROM_LAYOUTS)


__all__ = ["FROM_LAYOUTS", "LAYOUTS", "from_layout", "native_to_piergiaj", "piergiaj_to_native", "to_layout"]
