"""Other ports' state_dict layouts <-> the native one.

``piergiaj``: the widely used piergiaj/pytorch-i3d ``InceptionI3d``. Its units
hold ``conv3d`` and a ``nn.BatchNorm3d`` named ``bn`` (with a ``weight``, the
scale DeepMind's checkpoints do not have: written as ones), its inception
branches are ``b0, b1a, b1b, b2a, b2b, b3b`` and its classifier is ``logits``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch

from i3d_convert import architecture as arch
from i3d_convert.errors import MappingError

_PIERGIAJ_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_2/Conv3d_0a_3x3": "b2b",  # Mixed_5b's name quirk
    "Branch_3/Conv3d_0b_1x1": "b3b",
}


#: Each layout's (stem kernel, classifier kernel) keys: what tells the layouts apart and gives the shape.
LAYOUT_KEYS: Dict[str, Tuple[str, str]] = {
    "native": ("Conv3d_1a_7x7.conv.weight", f"{arch.LOGITS_NAME}.{arch.LOGITS_CONV_NAME}.conv.weight"),
    "piergiaj": ("Conv3d_1a_7x7.conv3d.weight", "logits.conv3d.weight"),
}


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"piergiaj"`` when the state_dict has piergiaj/pytorch-i3d's keys, else ``"native"``."""
    return "piergiaj" if any(key in state_dict for key in LAYOUT_KEYS["piergiaj"]) else "native"


def weights_shape(state_dict: Mapping[str, torch.Tensor], path: Optional[str] = None, layout: str = "native",
                  require_classifier: bool = False) -> Tuple[int, int]:
    """``(in_channels, num_classes)`` of an I3D state_dict in ``layout`` (num_classes 0 without a classifier,
    an error if ``require_classifier``): the stem kernel ``[64, in_channels, 7, 7, 7]`` and the classifier
    kernel ``[num_classes, 1024, 1, 1, 1]``. The one place the package reads them off a state_dict."""
    stem_key, logits_key = LAYOUT_KEYS[layout]
    stem, logits = state_dict.get(stem_key), state_dict.get(logits_key)
    where = "" if layout == "native" else f" in the {layout} layout"
    if stem is None or len(stem.shape) != 5:
        raise MappingError(f"not an I3D state_dict{where}: no 5-D {stem_key!r}", path)
    if logits is None and require_classifier:
        raise MappingError(f"not an I3D state_dict{where}: no classifier {logits_key!r}", path)
    return int(stem.shape[1]), (int(logits.shape[0]) if logits is not None else 0)


def piergiaj_unit_name(path: str) -> str:
    """DeepMind unit path -> piergiaj module path (``Mixed_3b/Branch_1/Conv3d_0b_3x3`` -> ``Mixed_3b.b1b``)."""
    if path == f"{arch.LOGITS_NAME}/{arch.LOGITS_CONV_NAME}":
        return "logits"
    block, _, rest = path.partition("/")
    if not rest:
        return block
    return f"{block}.{_PIERGIAJ_BRANCHES[rest]}"


def native_to_piergiaj(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Keys and extra tensors that load strictly into piergiaj's ``InceptionI3d``."""
    in_channels, num_classes = weights_shape(state_dict, require_classifier=True)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    used = set()
    for unit in arch.iter_conv_units(in_channels, num_classes):
        src, dst = unit.torch_prefix, piergiaj_unit_name(unit.path)
        out[f"{dst}.conv3d.weight"] = state_dict[f"{src}.conv.weight"]
        used.add(f"{src}.conv.weight")
        if unit.bias:
            out[f"{dst}.conv3d.bias"] = state_dict[f"{src}.conv.bias"]
            used.add(f"{src}.conv.bias")
        if unit.batch_norm:
            beta = state_dict[f"{src}.bn.bias"]
            out[f"{dst}.bn.weight"] = torch.ones_like(beta)
            out[f"{dst}.bn.bias"] = beta
            out[f"{dst}.bn.running_mean"] = state_dict[f"{src}.bn.running_mean"]
            out[f"{dst}.bn.running_var"] = state_dict[f"{src}.bn.running_var"]
            out[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
            used.update(f"{src}.bn.{k}" for k in ("bias", "running_mean", "running_var"))
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

    for unit in arch.iter_conv_units(in_channels, num_classes):
        src, dst = piergiaj_unit_name(unit.path), unit.torch_prefix
        weight = take(f"{src}.conv3d.weight")
        if unit.bias:
            out[f"{dst}.conv.bias"] = take(f"{src}.conv3d.bias")
        if unit.batch_norm:
            gamma = take(f"{src}.bn.weight")
            mean = take(f"{src}.bn.running_mean")
            if not torch.all(gamma == 1):
                weight = weight * gamma.view(-1, 1, 1, 1, 1)
                mean = mean * gamma
            out[f"{dst}.bn.bias"] = take(f"{src}.bn.bias")
            out[f"{dst}.bn.running_mean"] = mean
            out[f"{dst}.bn.running_var"] = take(f"{src}.bn.running_var")
            if f"{src}.bn.num_batches_tracked" in state_dict:
                used.add(f"{src}.bn.num_batches_tracked")
        out[f"{dst}.conv.weight"] = weight
    extra = sorted(set(state_dict) - used)
    if extra:
        raise MappingError(f"unknown piergiaj key {extra[0]!r}")
    return out


LAYOUTS: Dict[str, Callable[[Mapping[str, torch.Tensor]], "OrderedDict[str, torch.Tensor]"]] = {
    "piergiaj": native_to_piergiaj,
}
FROM_LAYOUTS = {"piergiaj": piergiaj_to_native}


def _convert(state_dict: Mapping[str, torch.Tensor], layout: str,
             converters: Mapping[str, Callable[[Mapping[str, torch.Tensor]], "OrderedDict[str, torch.Tensor]"]],
             ) -> "OrderedDict[str, torch.Tensor]":
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
