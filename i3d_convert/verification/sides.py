"""The two sides of :func:`~i3d_convert.verification.verify.verify`: the PyTorch model under test and TensorFlow's run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, MutableMapping, Optional, Tuple

import numpy as np
import torch

from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError, MappingError
from i3d_convert.verification.metrics import ncthw_to_nthwc

# --------------------------------------------------------------------------- the TensorFlow side


@dataclass
class TensorFlowSide:
    """The reference: TF1-named ``variables`` run by :func:`i3d_convert.reference.tf_forward.tf_forward`.

    ``key`` identifies the weights and clip in ``cache`` (a dict shared across
    runs so that identical TensorFlow runs are made once).
    """

    variables: Mapping[str, np.ndarray]
    bn_eps: float
    device: str  # "cpu" or "gpu"
    key: Tuple
    cache: Optional[MutableMapping] = None

    def run(self, clip: np.ndarray, dtype: str, allow_tf32: bool) -> Dict[str, np.ndarray]:
        """Endpoint -> NTHWC array of ``dtype`` for ``clip`` ``[1, T, 224, 224, C]``."""
        from i3d_convert.reference.tf_forward import tf_forward

        full_key = self.key + (dtype, self.bn_eps, self.device, allow_tf32)
        if self.cache is not None and full_key in self.cache:
            return self.cache[full_key]
        out = tf_forward(self.variables, clip.astype(dtype), dtype=dtype, bn_eps=self.bn_eps, device=self.device,
                         allow_tf32=allow_tf32)
        if self.cache is not None:
            self.cache[full_key] = out
        return out


# --------------------------------------------------------------------------- the PyTorch side


def state_dict_classes(state: Mapping[str, torch.Tensor], layout: str, source: str) -> Tuple[int, int]:
    """``(in_channels, num_classes)`` of an I3D state_dict in ``layout`` (classifier required)."""
    from i3d_convert.names.layouts import weights_shape

    return weights_shape(state, source, layout, require_classifier=True)


def build_torch_model(state: Mapping[str, torch.Tensor], layout: str, bn_eps: float, pad: str,
                      source: str) -> torch.nn.Module:
    """The model a state_dict of ``layout`` is run with, loaded strictly, in eval mode."""
    from i3d_convert.models.i3d import InceptionI3d
    from i3d_convert.models.ports import PiergiajI3D

    in_channels, num_classes = state_dict_classes(state, layout, source)
    if layout == "native":
        if pad != "tf_same":
            raise I3DConvertError("pad='symmetric' applies to layout='piergiaj' (the native model always "
                                  "pads as TensorFlow's 'SAME')")
        model: torch.nn.Module = InceptionI3d(num_classes, in_channels, bn_eps=bn_eps)
    else:
        model = PiergiajI3D(num_classes, in_channels, bn_eps=bn_eps, padding=pad)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise MappingError(f"state_dict does not load strictly into the {layout} model: {' '.join(first)}",
                           source) from None
    return model.eval()


def torch_endpoints(model: torch.nn.Module, clip: np.ndarray, dtype: str,
               device: torch.device) -> Dict[str, "np.ndarray | str"]:
    """Endpoint -> NTHWC float64 array; an endpoint the model could not compute -> the error text.

    A port with other padding can shrink the time axis until its Logits pool
    has no output (piergiaj with symmetric padding on a 9-frame clip): then
    the endpoints before it are still compared.
    """
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    model = model.to(device=device, dtype=torch_dtype)
    x = torch.from_numpy(np.ascontiguousarray(clip.transpose(0, 4, 1, 2, 3))).to(device=device, dtype=torch_dtype)
    out: Dict[str, Any] = {}
    with torch.inference_mode():
        try:
            out.update(model.forward_endpoints(x))
        except RuntimeError as exc:
            names = [n for n in arch.ENDPOINTS if n != arch.LOGITS_NAME]
            for name in names:  # the same layers, one at a time, up to Mixed_5c
                x = getattr(model, name)(x)
                out[name] = x
            out[arch.LOGITS_NAME] = f"PyTorch side failed: {str(exc).splitlines()[0]}"
    return {name: value if isinstance(value, str) else ncthw_to_nthwc(value.double().cpu().numpy())
            for name, value in out.items()}


class TorchTF32:
    """Set PyTorch's TF32 switches for the run and restore them afterwards."""

    def __init__(self, allow: bool) -> None:
        self.allow = allow

    def __enter__(self) -> "TorchTF32":
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = self.allow
        torch.backends.cudnn.allow_tf32 = self.allow
        return self

    def __exit__(self, *exc: object) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def reference_from_state(state: Mapping[str, torch.Tensor], layout: str) -> Dict[str, np.ndarray]:
    """TF1-named variables of a state_dict, under the scope DeepMind's release of that kind uses."""
    from i3d_convert.conversion.layouts import from_layout
    from i3d_convert.conversion.tf_layout import torch_to_tf_arrays
    from i3d_convert.names.tf1 import deepmind_scope

    native = from_layout(state, layout)
    scope = deepmind_scope(*state_dict_classes(native, "native", "state_dict"))
    return torch_to_tf_arrays({k: v.detach().cpu().numpy() for k, v in native.items()}, scope=scope)




@dataclass
class TorchSide:
    """The side under test: a state_dict in ``layout`` run on ``clip`` (NTHWC float64) in ``dtype`` on ``device``."""

    state: Mapping[str, torch.Tensor]
    layout: str
    source: str  # names the weights in errors and the report
    clip: np.ndarray
    dtype: str
    device: torch.device
    allow_tf32: bool

    def run(self, bn_eps: float, pad: str) -> Dict[str, "np.ndarray | str"]:
        """:func:`torch_endpoints` of the model built with this batch-norm eps and padding."""
        model = build_torch_model(self.state, self.layout, bn_eps, pad, self.source)
        with TorchTF32(self.allow_tf32):
            return torch_endpoints(model, self.clip, self.dtype, self.device)


__all__ = ["TensorFlowSide", "TorchSide", "TorchTF32", "build_torch_model", "reference_from_state",
           "state_dict_classes", "torch_endpoints"]
