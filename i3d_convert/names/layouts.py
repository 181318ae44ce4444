"""Other ports' state_dict keys <-> the native ones; which layout a state_dict is in.

``piergiaj``: the widely used piergiaj/pytorch-i3d ``InceptionI3d``. Its units
hold ``conv3d`` and a ``nn.BatchNorm3d`` named ``bn`` (with a ``weight``, the
scale DeepMind's checkpoints do not have, and a ``num_batches_tracked``), its
inception branches are ``b0, b1a, b1b, b2a, b2b, b3b`` and its classifier is
``logits``.

Names only: :func:`piergiaj_key_table` is the key table; the tensors are
moved (and a batch-norm scale folded) by :mod:`i3d_convert.conversion.layouts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

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

# Roles of the tensors of one conv unit (the keys of UnitKeys' dicts).
WEIGHT, BIAS = "weight", "bias"  # the conv kernel and bias
BETA, MEAN, VAR = "beta", "mean", "var"  # the batch norm's offset and running statistics
SCALE, STEPS = "scale", "steps"  # piergiaj only: BatchNorm3d's weight and num_batches_tracked
#: role -> (native leaf, piergiaj leaf) below the unit's module; None: that layout has no such tensor.
_LEAVES: Dict[str, Tuple[Optional[str], str]] = {
    WEIGHT: ("conv.weight", "conv3d.weight"),
    BIAS: ("conv.bias", "conv3d.bias"),
    SCALE: (None, "bn.weight"),
    BETA: ("bn.bias", "bn.bias"),
    MEAN: ("bn.running_mean", "bn.running_mean"),
    VAR: ("bn.running_var", "bn.running_var"),
    STEPS: (None, "bn.num_batches_tracked"),
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


@dataclass(frozen=True)
class UnitKeys:
    """One conv unit's state_dict keys by role (WEIGHT, BIAS, BETA, ...), in each layout; a role the unit
    (or the layout) lacks is absent."""

    native: Dict[str, str]
    piergiaj: Dict[str, str]


def piergiaj_key_table(in_channels: int, num_classes: int) -> List[UnitKeys]:
    """Every conv unit's native and piergiaj keys, in the network's order."""
    table = []
    for unit in arch.iter_conv_units(in_channels, num_classes):
        roles = [WEIGHT] + ([BIAS] if unit.bias else []) + ([SCALE, BETA, MEAN, VAR, STEPS] if unit.batch_norm else [])
        native = {r: f"{unit.torch_prefix}.{_LEAVES[r][0]}" for r in roles if _LEAVES[r][0] is not None}
        piergiaj = {r: f"{piergiaj_unit_name(unit.path)}.{_LEAVES[r][1]}" for r in roles}
        table.append(UnitKeys(native, piergiaj))
    return table


__all__ = ["BETA", "BIAS", "LAYOUT_KEYS", "MEAN", "SCALE", "STEPS", "UnitKeys", "VAR", "WEIGHT", "detect_layout",
           "piergiaj_key_table", "piergiaj_unit_name", "weights_shape"]
