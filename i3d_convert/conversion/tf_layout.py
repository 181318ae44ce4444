"""DeepMind's TF1 arrays <-> :class:`~i3d_convert.models.i3d.InceptionI3d` state_dict arrays: names through
:func:`i3d_convert.names.tf1.mapping_table`, conv kernels transposed (``[kT, kH, kW, in, out]`` <->
``[out, in, kT, kH, kW]``), batch-norm vectors reshaped (kin600's ``[1, 1, 1, 1, C]``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional

import numpy as np

from i3d_convert.errors import MappingError
from i3d_convert.names.tf1 import (
    BN_VECTOR, CONV_WEIGHT, RGB_SCOPE, TensorRule, detect_scope, infer_channels, mapping_table, skip_reason,
)


@dataclass
class MappedCheckpoint:
    """The result of :func:`tf_to_torch_arrays`: arrays keyed and laid out for PyTorch."""

    arrays: Dict[str, np.ndarray]  # torch key -> array in PyTorch layout (a view where possible)
    scope: str
    in_channels: int
    num_classes: int
    skipped: Dict[str, str] = field(default_factory=dict)  # TF name -> reason
    sources: Dict[str, str] = field(default_factory=dict)  # torch key -> TF name


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


__all__ = ["MappedCheckpoint", "tf_to_torch_arrays", "torch_to_tf_arrays"]
