"""TensorFlow variable names <-> PyTorch state_dict keys: one explicit, pure table.

The table is built from :mod:`i3d_convert.architecture`: for every conv unit
``P`` (DeepMind's scope, e.g. ``Mixed_3b/Branch_1/Conv3d_0b_3x3``)::

    P/conv_3d/w                  -> P.conv.weight        [kT,kH,kW,in,out] -> [out,in,kT,kH,kW]
    P/conv_3d/b                  -> P.conv.bias          (logits only)
    P/batch_norm/beta            -> P.bn.bias            [C] or [1,1,1,1,C] -> [C]
    P/batch_norm/moving_mean     -> P.bn.running_mean
    P/batch_norm/moving_variance -> P.bn.running_var

with ``/`` replaced by ``.`` in ``P``. Matching is by exact name, never by
position or by chained string replacement. The mapping is strict: every model
key must be filled exactly once and every checkpoint variable must be used,
except optimizer slots and bookkeeping variables, which are skipped by rule
and listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from i3d_convert import architecture as arch
from i3d_convert.errors import MappingError

#: Scope prefixes of the released checkpoints (kin600 has none).
#: DeepMind's variable scopes of the RGB and flow streams (the Kinetics-600 release has none).
RGB_SCOPE = "RGB/inception_i3d/"
FLOW_SCOPE = "Flow/inception_i3d/"
KNOWN_SCOPES: Tuple[str, ...] = (RGB_SCOPE, FLOW_SCOPE, "inception_i3d/", "")


def deepmind_scope(in_channels: int, num_classes: int) -> str:
    """The scope DeepMind's release of this kind uses: none for Kinetics-600, else by stream."""
    if num_classes == arch.NUM_CLASSES_600:
        return ""
    return FLOW_SCOPE if in_channels == arch.FLOW_CHANNELS else RGB_SCOPE

#: Variables that are not model weights: optimizer slots and training bookkeeping.
SKIP_PATTERNS: Tuple[Tuple[str, "re.Pattern[str]"], ...] = (
    ("optimizer slot", re.compile(r".*/(Momentum|Adam|Adam_1|RMSProp|RMSProp_1|ExponentialMovingAverage)$")),
    ("training step counter", re.compile(r"^(.*/)?global_step$")),
    ("TF2 object graph", re.compile(r"^_CHECKPOINTABLE_OBJECT_GRAPH$")),
    ("TF2 optimizer state", re.compile(r"^(optimizer|save_counter)/.*")),
)

CONV_WEIGHT = "conv_weight"
CONV_BIAS = "vector"
BN_VECTOR = "bn_vector"


@dataclass(frozen=True)
class TensorRule:
    """Where one TF variable goes and how its layout changes."""

    tf_suffix: str  # name below the scope, e.g. "Conv3d_1a_7x7/conv_3d/w"
    torch_key: str
    torch_shape: Tuple[int, ...]
    kind: str  # CONV_WEIGHT, CONV_BIAS or BN_VECTOR


def mapping_table(in_channels: int = arch.RGB_CHANNELS, num_classes: int = arch.NUM_CLASSES_400) -> Dict[str, TensorRule]:
    """``{tf name below the scope: TensorRule}`` for every model tensor (230 for I3D)."""
    table: Dict[str, TensorRule] = {}

    def add(tf_suffix: str, torch_key: str, shape: Tuple[int, ...], kind: str) -> None:
        table[tf_suffix] = TensorRule(tf_suffix, torch_key, shape, kind)

    for unit in arch.iter_conv_units(in_channels, num_classes):
        p, t = unit.path, unit.torch_prefix
        add(f"{p}/{arch.TF_CONV_SCOPE}/w", f"{t}.conv.weight", (unit.out_channels, unit.in_channels) + unit.kernel, CONV_WEIGHT)
        if unit.bias:
            add(f"{p}/{arch.TF_CONV_SCOPE}/b", f"{t}.conv.bias", (unit.out_channels,), CONV_BIAS)
        if unit.batch_norm:
            c = (unit.out_channels,)
            add(f"{p}/{arch.TF_BN_SCOPE}/beta", f"{t}.bn.bias", c, BN_VECTOR)
            add(f"{p}/{arch.TF_BN_SCOPE}/moving_mean", f"{t}.bn.running_mean", c, BN_VECTOR)
            add(f"{p}/{arch.TF_BN_SCOPE}/moving_variance", f"{t}.bn.running_var", c, BN_VECTOR)
    return table


def tf_name_to_torch_key(name: str) -> Optional[str]:
    """The state_dict key for a TF variable name (any known scope), or None if it is no model tensor."""
    scope = next((s for s in KNOWN_SCOPES if s and name.startswith(s)), "")
    rule = mapping_table().get(name[len(scope):])
    return rule.torch_key if rule else None


def skip_reason(name: str) -> Optional[str]:
    for reason, pattern in SKIP_PATTERNS:
        if pattern.match(name):
            return reason
    return None


def detect_scope(names: List[str], path: Optional[str] = None) -> str:
    """The scope prefix shared by the model variables: ``RGB/inception_i3d/``, ``Flow/inception_i3d/`` or ``""``."""
    model_names = [n for n in names if skip_reason(n) is None]
    stem = f"Conv3d_1a_7x7/{arch.TF_CONV_SCOPE}/w"
    candidates = [n[: -len(stem)] for n in model_names if n.endswith(stem)]
    if len(candidates) != 1:
        found = "none" if not candidates else ", ".join(repr(c + stem) for c in candidates)
        raise MappingError(f"expected exactly one stem variable '<scope>{stem}', found {found}", path)
    scope = candidates[0]
    if scope not in KNOWN_SCOPES:
        raise MappingError(f"unknown variable scope {scope!r}; known: {', '.join(repr(s) for s in KNOWN_SCOPES)}", path)
    return scope


def infer_channels(arrays: Mapping[str, np.ndarray], scope: str, path: Optional[str] = None) -> Tuple[int, int]:
    """(in_channels, num_classes) read off the stem and logits kernels."""
    stem = arrays[f"{scope}Conv3d_1a_7x7/{arch.TF_CONV_SCOPE}/w"]
    logits_name = f"{scope}{arch.LOGITS_NAME}/{arch.LOGITS_CONV_NAME}/{arch.TF_CONV_SCOPE}/w"
    if logits_name not in arrays:
        raise MappingError(f"missing variable {logits_name!r}", path)
    logits = arrays[logits_name]
    if len(stem.shape) != 5 or len(logits.shape) != 5:
        raise MappingError(
            f"conv kernels must be 5-D [kT,kH,kW,in,out]; stem is {list(stem.shape)}, logits {list(logits.shape)}", path
        )
    return int(stem.shape[3]), int(logits.shape[4])


