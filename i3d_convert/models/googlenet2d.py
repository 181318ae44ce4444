"""The 2D Inception-v1 that I3D inflates, in PyTorch: TF-slim's ``InceptionV1``.

Built from the one layer table (:mod:`i3d_convert.architecture`): each I3D layer
keeps its spatial part (``kernel[1:]``, ``stride[1:]``) and loses the time axis,
which is exactly the 2D network DeepMind inflated (slim's 3x3 "5x5" branch,
``Mixed_5b/Branch_2/Conv2d_0a_3x3`` included). Padding is TensorFlow's 'SAME'
(the odd pixel after), max pools never let a padded position win, batch norm has
no scale by default (slim's ``scale=False``) and eps 1e-3.

Module names mirror slim's scopes (:func:`i3d_convert.names.slim.slim_name`), so
``Mixed_3b/Branch_1/Conv2d_0b_3x3/weights`` is ``Mixed_3b.Branch_1.Conv2d_0b_3x3.conv.weight``
(OIHW here, HWIO in slim). Input NCHW in [-1, 1].

This network exists to prove inflation exact (the boring-video tests) and to
make seeded 2D sources; it is not used on the conversion path.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from i3d_convert import architecture as arch
from i3d_convert.models.endpoints import run_branches, run_endpoints
from i3d_convert.names.slim import SLIM_SCOPE, slim_name

Pair = Tuple[int, int]

#: slim's ImageNet head: 1000 classes plus "background" at index 0.
SLIM_NUM_CLASSES = 1001


def _same_pads(sizes, kernel: Pair, stride: Pair) -> List[Tuple[int, int]]:
    return [arch.tf_same_padding(n, k, s) for n, k, s in zip(sizes, kernel, stride)]


def _flat(pads: List[Tuple[int, int]]) -> List[int]:
    # F.pad lists the last axis first.
    return [p for before_after in reversed(pads) for p in before_after]


class BatchNorm2dTF(nn.Module):
    """Inference batch norm over channel axis 1; scale (``weight``) only when ``scale=True``.

    ``y = weight * (x - running_mean) / sqrt(running_var + eps) + bias``.
    """

    def __init__(self, num_features: int, eps: float = arch.BN_EPS, scale: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if scale else None
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class Unit2D(nn.Module):
    """Conv2d with TF 'SAME' padding -> optional batch norm -> optional ReLU (slim's ``conv2d``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Pair, stride: Pair = (1, 1), *,
                 batch_norm: bool = True, bias: bool = False, relu: bool = True,
                 bn_eps: float = arch.BN_EPS, bn_scale: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, bias=bias)
        self.bn = BatchNorm2dTF(out_channels, bn_eps, bn_scale) if batch_norm else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.pad(x, _flat(_same_pads(x.shape[2:], self.kernel, self.stride))))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool2dSame(nn.Module):
    """Max pool with TF 'SAME' padding; padded positions are -inf and never win."""

    def __init__(self, kernel: Pair, stride: Pair) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _flat(_same_pads(x.shape[2:], self.kernel, self.stride))
        return F.max_pool2d(F.pad(x, pads, value=float("-inf")), self.kernel, self.stride)


class _Namespace(nn.Module):
    """Groups children so that state-dict keys follow slim's scopes."""


class Mixed2D(nn.Module):
    def __init__(self, name: str, spec: arch.Mixed, in_channels: int, bn_eps: float, bn_scale: bool) -> None:
        super().__init__()
        self._paths: List[List[nn.Module]] = [[], [], [], []]
        for branch in ("Branch_0", "Branch_1", "Branch_2", "Branch_3"):
            self.add_module(branch, _Namespace())
        pool = MaxPool2dSame(arch.MIXED_POOL.kernel[1:], arch.MIXED_POOL.stride[1:])
        self.Branch_3.add_module(slim_name(arch.MIXED_POOL_NAME), pool)
        self._paths[3].append(pool)
        for unit in arch.mixed_branch_units(name, spec, in_channels):
            _, branch, conv_name = slim_name(unit.path).split("/")
            layer = Unit2D(unit.in_channels, unit.out_channels, unit.kernel[1:], unit.stride[1:],
                           bn_eps=bn_eps, bn_scale=bn_scale)
            getattr(self, branch).add_module(conv_name, layer)
            self._paths[int(branch[-1])].append(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_branches(x, self._paths)


class Logits2D(nn.Module):
    """slim's head: avg pool 7x7 stride 1 VALID -> dropout -> 1x1 conv with bias -> spatial mean (a squeeze at 224)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.add_module(slim_name(arch.LOGITS_CONV_NAME),
                        Unit2D(in_channels, num_classes, (1, 1), batch_norm=False, bias=True, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, arch.LOGITS_POOL_KERNEL[1:], stride=1)
        x = getattr(self, slim_name(arch.LOGITS_CONV_NAME))(self.dropout(x))
        return x.mean(dim=(2, 3))


class GoogLeNet2d(nn.Module):
    """TF-slim ``InceptionV1`` (2D), laid out from I3D's table.

    Args:
        num_classes: 1001 for slim's ImageNet head (class 0 = background), 1000 for torchvision's.
        in_channels: 3 (RGB).
        bn_scale: give every batch norm a scale (``weight``), as torchvision's ``googlenet`` has.
        bn_eps: 1e-3 in slim, torchvision and I3D.

    ``forward_endpoints(x)`` maps ``[B, C, H, W]`` to ``{slim endpoint: activation}``
    (``Conv2d_1a_7x7`` ... ``Mixed_5c`` NCHW, ``Logits`` ``[B, num_classes]``).
    """

    def __init__(self, num_classes: int = SLIM_NUM_CLASSES, in_channels: int = arch.RGB_CHANNELS, *,
                 bn_scale: bool = False, bn_eps: float = arch.BN_EPS, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.bn_scale = num_classes, in_channels, bn_scale
        self.endpoint_names: Tuple[str, ...] = tuple(slim_name(name) for name in arch.ENDPOINTS)
        channels = in_channels
        for name, layer in arch.LAYERS:
            if isinstance(layer, arch.Conv):
                module: nn.Module = Unit2D(channels, layer.out_channels, layer.kernel[1:], layer.stride[1:],
                                           bn_eps=bn_eps, bn_scale=bn_scale)
                channels = layer.out_channels
            elif isinstance(layer, arch.MaxPool):
                module = MaxPool2dSame(layer.kernel[1:], layer.stride[1:])
            else:
                module = Mixed2D(name, layer, channels, bn_eps, bn_scale)
                channels = layer.out_channels
            self.add_module(slim_name(name), module)
        self.add_module(arch.LOGITS_NAME, Logits2D(channels, num_classes, dropout))

    def forward_endpoints(self, x: torch.Tensor, endpoints: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
        """``{name: activation}`` (NCHW; ``Logits`` ``[B, num_classes]``) up to the last requested endpoint."""
        return run_endpoints(self, self.endpoint_names, x, endpoints)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_endpoints(x, [arch.LOGITS_NAME])[arch.LOGITS_NAME]


def slim_arrays(model: GoogLeNet2d) -> Dict[str, np.ndarray]:
    """The model's weights as a TF-slim checkpoint's ``{variable name: array}`` (HWIO kernels).

    Requires ``bn_scale=False``: slim's released checkpoint has no ``BatchNorm/gamma``.
    """
    if model.bn_scale:
        raise ValueError("slim's InceptionV1 checkpoint has no batch-norm scale; build with bn_scale=False")
    out: Dict[str, np.ndarray] = {}
    for unit in arch.iter_conv_units(model.in_channels, model.num_classes):
        scope = SLIM_SCOPE + slim_name(unit.path)
        module = model.get_submodule(slim_name(unit.path).replace("/", "."))
        out[f"{scope}/weights"] = module.conv.weight.detach().cpu().numpy().transpose(2, 3, 1, 0).copy()
        if module.conv.bias is not None:
            out[f"{scope}/biases"] = module.conv.bias.detach().cpu().numpy().copy()
        if module.bn is not None:
            out[f"{scope}/BatchNorm/beta"] = module.bn.bias.detach().cpu().numpy().copy()
            out[f"{scope}/BatchNorm/moving_mean"] = module.bn.running_mean.cpu().numpy().copy()
            out[f"{scope}/BatchNorm/moving_variance"] = module.bn.running_var.cpu().numpy().copy()
    return out


def from_slim_arrays(arrays: Dict[str, np.ndarray], *, dtype: torch.dtype = torch.float32) -> GoogLeNet2d:
    """A GoogLeNet2d (eval mode) holding a TF-slim ``InceptionV1`` checkpoint's ``{variable: array}``
    (the inverse of :func:`slim_arrays`; the class count is read off the logits kernel)."""
    logits = f"{SLIM_SCOPE}{slim_name(arch.LOGITS_NAME + '/' + arch.LOGITS_CONV_NAME)}/weights"
    model = GoogLeNet2d(int(arrays[logits].shape[-1])).eval()
    state = {}
    for unit in arch.iter_conv_units(model.in_channels, model.num_classes):
        scope, key = SLIM_SCOPE + slim_name(unit.path), slim_name(unit.path).replace("/", ".")
        state[f"{key}.conv.weight"] = torch.from_numpy(np.ascontiguousarray(arrays[f"{scope}/weights"].transpose(3, 2, 0, 1)))
        if unit.bias:
            state[f"{key}.conv.bias"] = torch.from_numpy(np.array(arrays[f"{scope}/biases"]))
        if unit.batch_norm:
            for ours, theirs in (("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance")):
                state[f"{key}.bn.{ours}"] = torch.from_numpy(np.array(arrays[f"{scope}/BatchNorm/{theirs}"]))
    model.load_state_dict(state, strict=True)
    return model.to(dtype)


def random_frame(shape: Tuple[int, int, int, int], seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A seeded image-like frame ``[N, C, H, W]`` in [-1, 1] (the 2D version of ``synthetic.random_clip``).

    Uniform noise mixed with its 3x3 local mean, so that strided layers and
    pools see some spatial structure, as in natural images.
    """
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    smooth = F.avg_pool2d(noise, 3, stride=1, padding=1, count_include_pad=False)
    frame = (0.6 * smooth / smooth.abs().amax().clamp_min(1e-12) + 0.4 * noise).clamp(-1, 1)
    return frame.to(dtype)


def random_googlenet2d(seed: int = 0, num_classes: int = SLIM_NUM_CLASSES, *, bn_scale: bool = False,
                       calibration_size: int = 224) -> GoogLeNet2d:
    """A seeded GoogLeNet2d in eval mode whose activations stay O(1) through all 57 layers.

    Convs are He-initialised; every batch norm's moving statistics are set from
    the activations that reach it on one seeded image-like calibration frame
    (:func:`random_frame`, perturbed a little), ``beta`` ~ N(0, 0.2), and with ``bn_scale`` the scale is drawn from
    [0.5, 1.5] with random signs for a quarter of the channels (so folding it is
    tested on values far from 1).
    """
    g = torch.Generator().manual_seed(seed)
    model = GoogLeNet2d(num_classes, bn_scale=bn_scale).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("conv.weight"):
                param.copy_(torch.randn(param.shape, generator=g) * (2.0 / param[0].numel()) ** 0.5)
            elif name.endswith("conv.bias"):
                param.copy_(torch.randn(param.shape, generator=g) * 0.5)
            elif name.endswith("bn.bias"):
                param.copy_(torch.randn(param.shape, generator=g) * 0.2)
            elif name.endswith("bn.weight"):
                sign = torch.where(torch.rand(param.shape, generator=g) < 0.25, -1.0, 1.0)
                param.copy_(sign * (0.5 + torch.rand(param.shape, generator=g)))

    def calibrate(module: BatchNorm2dTF, inputs) -> None:
        x = inputs[0]
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
        n = mean.shape[0]
        module.running_mean.copy_(mean + 0.1 * var.sqrt() * torch.randn(n, generator=g))
        module.running_var.copy_(var * torch.empty(n).uniform_(0.8, 1.25, generator=g) + 1e-3)

    hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules() if isinstance(m, BatchNorm2dTF)]
    image = random_frame((1, model.in_channels, calibration_size, calibration_size), seed=seed + 1)
    with torch.no_grad():
        model(image)
    for hook in hooks:
        hook.remove()
    return model
