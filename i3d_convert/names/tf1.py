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
from dataclasses import dataclass, field
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


@dataclass
class MappedCheckpoint:
    """The result of :func:`tf_to_torch_arrays`: arrays keyed and laid out for PyTorch."""

    arrays: Dict[str, np.ndarray]  # torch key -> array in PyTorch layout (a view where possible)
    scope: str
    in_channels: int
    num_classes: int
    skipped: Dict[str, str] = field(default_factory=dict)  # TF name -> reason
    sources: Dict[str, str] = field(default_factory=dict)  # torch key -> TF name


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


def _to_torch_layout(array: np.ndarray, rule: TensorRule, name: str, path: Optional[str]) -> np.ndarray:
    if rule.kind == CONV_WEIGHT:
        if array.ndim != 5:
            raise MappingError(f"variable {name!r} has shape {list(array.shape)}, expected a 5-D conv kernel", path)
        out = array.transpose(4, 3, 0, 1, 2)
    else:
        # kin600 stores batch-norm vectors as [1,1,1,1,C]; only leading 1s may be dropped.
        if array.ndim == 0 or any(d != 1 for d in array.shape[:-1]):
            raise MappingError(f"variable {name!r} has shape {list(array.shape)}, expected [C] or [1,...,1,C]", path)
        out = array.reshape(array.shape[-1])
    if tuple(out.shape) != rule.torch_shape:
        raise MappingError(
            f"variable {name!r} has shape {list(array.shape)}, which does not fit {rule.torch_key} "
            f"{list(rule.torch_shape)}",
            path,
        )
    return out


def tf_to_torch_arrays(
    arrays: Mapping[str, np.ndarray],
    *,
    path: Optional[str] = None,
    expected_in_channels: Optional[int] = None,
    expected_num_classes: Optional[int] = None,
) -> MappedCheckpoint:
    """Map DeepMind TF1 checkpoint arrays onto :class:`~i3d_convert.models.i3d.InceptionI3d` keys.

    ``arrays`` is ``{tf name: array}`` as a reader returns it (any scope). The
    returned arrays are in PyTorch layout (conv kernels transposed views, not
    copies). Raises :class:`MappingError` naming the variable for unknown,
    missing or misshapen variables.
    """
    names = sorted(arrays)
    skipped = {n: r for n in names if (r := skip_reason(n)) is not None}
    scope = detect_scope(names, path)
    in_channels, num_classes = infer_channels(arrays, scope, path)
    for label, expected, got in (("input channels", expected_in_channels, in_channels),
                                 ("classes", expected_num_classes, num_classes)):
        if expected is not None and expected != got:
            raise MappingError(f"checkpoint has {got} {label}, expected {expected}", path)
    table = mapping_table(in_channels, num_classes)
    out: Dict[str, np.ndarray] = {}
    sources: Dict[str, str] = {}
    for name in names:
        if name in skipped:
            continue
        if not name.startswith(scope):
            raise MappingError(f"variable {name!r} is outside the model scope {scope!r}", path)
        rule = table.get(name[len(scope):])
        if rule is None:
            raise MappingError(f"unknown variable {name!r}: it has no place in InceptionI3d", path)
        out[rule.torch_key] = _to_torch_layout(arrays[name], rule, name, path)
        sources[rule.torch_key] = name
    missing = [scope + suffix for suffix, rule in table.items() if rule.torch_key not in out]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MappingError(f"missing variable {missing[0]!r}{more}", path)
    return MappedCheckpoint(out, scope, in_channels, num_classes, skipped, sources)


def torch_to_tf_arrays(
    state_dict: Mapping[str, "np.ndarray"],
    *,
    scope: str = RGB_SCOPE,
    bn_shape_5d: bool = False,
    path: Optional[str] = None,
) -> Dict[str, np.ndarray]:
    """The inverse mapping: native state_dict (as numpy arrays) -> ``{tf name: array}``.

    ``bn_shape_5d`` writes batch-norm vectors as ``[1,1,1,1,C]`` (the kin600
    layout). Strict in the same way as :func:`tf_to_torch_arrays`.
    """
    from i3d_convert.names.layouts import weights_shape

    table = mapping_table(*weights_shape(state_dict, path, require_classifier=True))
    by_key = {rule.torch_key: rule for rule in table.values()}
    unknown = sorted(set(state_dict) - set(by_key))
    if unknown:
        raise MappingError(f"unknown state_dict key {unknown[0]!r}: it has no TensorFlow name", path)
    out: Dict[str, np.ndarray] = {}
    for key, rule in by_key.items():
        if key not in state_dict:
            raise MappingError(f"missing state_dict key {key!r}", path)
        array = np.asarray(state_dict[key])
        if tuple(array.shape) != rule.torch_shape:
            raise MappingError(f"{key!r} has shape {list(array.shape)}, expected {list(rule.torch_shape)}", path)
        if rule.kind == CONV_WEIGHT:
            array = array.transpose(2, 3, 4, 1, 0)
        elif rule.kind == BN_VECTOR and bn_shape_5d:
            array = array.reshape(1, 1, 1, 1, -1)
        out[scope + rule.tf_suffix] = np.ascontiguousarray(array)
    return out
