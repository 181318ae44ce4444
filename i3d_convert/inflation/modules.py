"""Inflating any 2D CNN module by module (the I3D-ResNet recipe): Conv2d -> Conv3d, BatchNorm2d -> BatchNorm3d, pools."""

from __future__ import annotations

import copy
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from i3d_convert.errors import I3DConvertError
from i3d_convert.inflation.recipe import check_mode

# --------------------------------------------------------------------------- any 2D CNN

TimeKernels = Union[int, Mapping[str, int], Callable[[str, nn.Module], int]]

#: Leaf modules that work unchanged on NCTHW input (elementwise, channel-wise or on a flattened vector).
PASSTHROUGH: Tuple[type, ...] = (
    nn.Identity, nn.Dropout, nn.Flatten, nn.Linear, nn.GroupNorm,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus,
)
_INFLATABLE = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout2d)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def _pair(v) -> Tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # type: ignore[return-value]


def temporal_plan(model_2d: nn.Module, time_kernels: TimeKernels = 3,
                  time_strides: Optional[Mapping[str, int]] = None) -> Dict[str, Tuple[int, int]]:
    """``{module name: (temporal kernel, temporal stride)}`` for every Conv2d and MaxPool2d/AvgPool2d.

    ``time_kernels``: an int ``k`` gives ``k`` to every conv whose spatial kernel
    is larger than 1x1 and 1 to 1x1 convs and pools; a mapping gives its value
    to the convs/pools it names and 1 to the rest; a callable ``(name, module) -> kT``
    decides for each. Temporal kernels must be odd (padding ``kT // 2`` keeps the
    time length). ``time_strides`` maps names to temporal strides (default 1).
    """
    names = {name for name, m in model_2d.named_modules() if type(m) in (nn.Conv2d,) + _POOLS}
    for label, table in (("time_kernels", time_kernels), ("time_strides", time_strides)):
        if isinstance(table, Mapping):
            unknown = sorted(set(table) - names)
            if unknown:
                raise I3DConvertError(f"{label} names {unknown[0]!r}, which is no Conv2d or pool of the model")
    plan: Dict[str, Tuple[int, int]] = {}
    for name, module in model_2d.named_modules():
        if type(module) not in (nn.Conv2d,) + _POOLS:
            continue
        if callable(time_kernels) and not isinstance(time_kernels, Mapping):
            k = int(time_kernels(name, module))
        elif isinstance(time_kernels, Mapping):
            k = int(time_kernels.get(name, 1))
        else:
            k = int(time_kernels) if type(module) is nn.Conv2d and max(_pair(module.kernel_size)) > 1 else 1
        s = int((time_strides or {}).get(name, 1))
        if k < 1 or k % 2 == 0:
            raise I3DConvertError(f"temporal kernel of {name!r} must be odd and >= 1, got {k}")
        if s < 1:
            raise I3DConvertError(f"temporal stride of {name!r} must be >= 1, got {s}")
        plan[name] = (k, s)
    return plan


def _inflate_conv(m: nn.Conv2d, k: int, s: int, mode: str) -> nn.Conv3d:
    kh, kw = _pair(m.kernel_size)
    if isinstance(m.padding, str):
        padding = m.padding if m.padding == "same" else (k // 2, 0, 0)
    else:
        padding = (k // 2,) + _pair(m.padding)
    if padding == "same" and s != 1:
        raise I3DConvertError("a padding='same' conv cannot get a temporal stride")
    # skip_init: the weights are overwritten below, so do not spend time on a random init.
    conv = torch.nn.utils.skip_init(
        nn.Conv3d, m.in_channels, m.out_channels, (k, kh, kw), (s,) + _pair(m.stride), padding,
        (1,) + _pair(m.dilation), m.groups, m.bias is not None, m.padding_mode,
        device=m.weight.device, dtype=m.weight.dtype,
    )
    with torch.no_grad():
        w = m.weight.detach()
        if mode == "mean":
            conv.weight.copy_((w / k).unsqueeze(2).expand(-1, -1, k, -1, -1))
        else:
            conv.weight.zero_()
            conv.weight[:, :, k // 2] = w
        if m.bias is not None:
            conv.bias.copy_(m.bias.detach())
    conv.train(m.training)
    return conv


def _inflate_bn(m: nn.BatchNorm2d) -> nn.BatchNorm3d:
    bn = nn.BatchNorm3d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
                        device=(m.weight if m.affine else m.running_mean).device,
                        dtype=(m.weight if m.affine else m.running_mean).dtype)
    bn.load_state_dict(m.state_dict())
    bn.train(m.training)
    return bn


def _inflate_pool(m: nn.Module, k: int, s: int) -> nn.Module:
    kernel = (k,) + _pair(m.kernel_size)
    stride = (s,) + _pair(m.stride if m.stride is not None else m.kernel_size)
    padding = (k // 2,) + _pair(m.padding)
    if isinstance(m, nn.MaxPool2d):
        return nn.MaxPool3d(kernel, stride, padding, (1,) + _pair(m.dilation), m.return_indices, m.ceil_mode)
    divisor = None if m.divisor_override is None else m.divisor_override * k
    return nn.AvgPool3d(kernel, stride, padding, m.ceil_mode, m.count_include_pad, divisor)


def _adaptive_size(size) -> Tuple[Optional[int], ...]:
    return (1,) + (_pair(size) if size is not None else (None, None))


def _inflated_layer(name: str, module: nn.Module, plan: Mapping[str, Tuple[int, int]], mode: str,
                    allowed: Tuple[type, ...]) -> Optional[nn.Module]:
    """The 3D replacement of one module, or None when it is kept as it is (a container or a shape-agnostic leaf)."""
    kind = type(module)
    if kind is nn.Conv2d:
        return _inflate_conv(module, *plan[name], mode)
    if kind is nn.BatchNorm2d:
        return _inflate_bn(module)
    if kind in _POOLS:
        return _inflate_pool(module, *plan[name])
    if kind is nn.AdaptiveAvgPool2d:
        return nn.AdaptiveAvgPool3d(_adaptive_size(module.output_size))
    if kind is nn.AdaptiveMaxPool2d:
        return nn.AdaptiveMaxPool3d(_adaptive_size(module.output_size), module.return_indices)
    if kind is nn.Dropout2d:
        return nn.Dropout3d(module.p, module.inplace)
    if isinstance(module, allowed) and not isinstance(module, _INFLATABLE):
        return None
    label = f"cannot inflate module {name or '<root>'!r} of type {kind.__module__}.{kind.__qualname__}"
    if isinstance(module, _INFLATABLE) or not any(True for _ in module.children()):
        raise I3DConvertError(f"{label}: only plain Conv2d/BatchNorm2d/pooling layers and shape-agnostic layers "
                              "are supported")
    if module._parameters or module._buffers:
        raise I3DConvertError(f"{label}: it holds its own tensors "
                              f"({', '.join(list(module._parameters) + list(module._buffers))}) whose use may assume 2D")
    return None


def inflate_module(
    model_2d: nn.Module,
    time_kernels: TimeKernels = 3,
    *,
    mode: str = "mean",
    time_strides: Optional[Mapping[str, int]] = None,
    passthrough: Sequence[type] = (),
) -> nn.Module:
    """A 3D copy of a 2D CNN (the I3D-ResNet recipe); ``model_2d`` is left untouched.

    * ``nn.Conv2d`` -> ``nn.Conv3d`` with temporal kernel/stride from
      :func:`temporal_plan`, temporal zero padding ``kT // 2``, weights inflated
      (``mode``: ``mean`` or ``center``) and the bias copied;
    * ``nn.BatchNorm2d`` -> ``nn.BatchNorm3d`` (same statistics and affine);
    * ``nn.MaxPool2d``/``nn.AvgPool2d`` -> 3D pools, temporal kernel 1 unless named in ``time_kernels``;
    * ``nn.AdaptiveAvgPool2d((h, w))``/``AdaptiveMaxPool2d`` -> 3D with output ``(1, h, w)``:
      global pooling also pools over time (as I3D averages its logits over time);
    * ``nn.Dropout2d`` -> ``nn.Dropout3d``; :data:`PASSTHROUGH` leaves and ``passthrough`` types are kept.

    Any other module that holds parameters/buffers itself, any other leaf
    module, and subclasses of the handled layers (e.g. timm's ``Conv2dSame``, whose
    forward differs) raise :class:`I3DConvertError` naming the module. The
    containers' own ``forward`` must be dimension-agnostic (true for ResNets,
    VGG, ...); the boring-video check in tests/test_inflate.py is how to prove
    it for a new model. The input of the result is NCTHW.
    """
    check_mode(mode)
    plan = temporal_plan(model_2d, time_kernels, time_strides)
    allowed = tuple(PASSTHROUGH) + tuple(passthrough)
    # Copy everything except the layers about to be replaced (they are shared with model_2d
    # until replaced in the copy, and only read), so their 2D weights are not copied for nothing.
    memo = {id(m): m for m in model_2d.modules() if type(m) in _INFLATABLE}
    model = copy.deepcopy(model_2d, memo)
    replacements: List[Tuple[nn.Module, str, nn.Module]] = []
    inflated: Dict[int, nn.Module] = {}  # a layer used in two places stays one (shared) layer
    for name, module in model.named_modules(remove_duplicate=False):
        new = inflated.get(id(module))
        if new is None:
            new = _inflated_layer(name, module, plan, mode, allowed)
            if new is None:
                continue
            inflated[id(module)] = new
        parent_name, _, attr = name.rpartition(".")
        replacements.append((model.get_submodule(parent_name), attr, new))
    for parent, attr, new in replacements:
        setattr(parent, attr, new)
    return model


