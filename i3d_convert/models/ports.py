"""Re-creations of third-party PyTorch I3D ports, for audits and benchmarks.

:class:`PiergiajI3D` has the module tree (hence the state_dict keys) of the
widely used piergiaj/pytorch-i3d ``InceptionI3d`` and, by default, its
semantics: every unit pads with a fresh ``F.pad`` at every forward (TF 'SAME'
amounts), max pools pad with zeros, batch norm is ``nn.BatchNorm3d`` with a
scale. Settings let an audit reproduce the variants found in FVD and
feature-extraction tools (``bn_eps=1e-5``, symmetric padding) and measure how
far each drifts from TensorFlow. Written from the port's published structure;
no code of it is copied.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from i3d_convert import architecture as arch

PADDING_MODES = ("tf_same", "symmetric")


def _pads(sizes: Sequence[int], kernel: Sequence[int], stride: Sequence[int], mode: str) -> Tuple[int, ...]:
    pairs = []
    for n, k, s in zip(sizes, kernel, stride):
        if mode == "tf_same":
            pairs.append(arch.tf_same_padding(n, k, s))
        else:  # what a port with Conv3d(padding=k//2) / a symmetric pool does
            pairs.append(((k - 1) // 2, (k - 1) // 2))
    return tuple(p for pair in reversed(pairs) for p in pair)


class PiergiajUnit3D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel, stride=(1, 1, 1), *, batch_norm=True,
                 bias=False, relu=True, bn_eps=1e-3, padding="tf_same") -> None:
        super().__init__()
        self.kernel, self.stride, self.relu, self.padding = tuple(kernel), tuple(stride), relu, padding
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=bias)
        if batch_norm:
            self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps, momentum=0.01)
        else:
            self.bn = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, _pads(x.shape[2:], self.kernel, self.stride, self.padding)))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class PiergiajMaxPool(nn.Module):
    def __init__(self, kernel, stride, padding="tf_same") -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = tuple(kernel), tuple(stride), padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Zero padding, as the port does (harmless after a ReLU, not in general).
        return F.max_pool3d(F.pad(x, _pads(x.shape[2:], self.kernel, self.stride, self.padding)), self.kernel, self.stride)


class PiergiajInception(nn.Module):
    def __init__(self, in_channels: int, spec: arch.Mixed, **unit_kwargs) -> None:
        super().__init__()
        one, three = (1, 1, 1), (3, 3, 3)
        self.b0 = PiergiajUnit3D(in_channels, spec.branch_0, one, **unit_kwargs)
        self.b1a = PiergiajUnit3D(in_channels, spec.branch_1[0], one, **unit_kwargs)
        self.b1b = PiergiajUnit3D(spec.branch_1[0], spec.branch_1[1], three, **unit_kwargs)
        self.b2a = PiergiajUnit3D(in_channels, spec.branch_2[0], one, **unit_kwargs)
        self.b2b = PiergiajUnit3D(spec.branch_2[0], spec.branch_2[1], three, **unit_kwargs)
        self.b3a = PiergiajMaxPool(three, one, unit_kwargs.get("padding", "tf_same"))
        self.b3b = PiergiajUnit3D(in_channels, spec.branch_3, one, **unit_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class PiergiajI3D(nn.Module):
    """piergiaj-layout I3D. ``forward`` returns per-time-step logits ``[B, classes, T']`` as
    that port does; :meth:`video_logits` averages them over time (DeepMind's output)."""

    def __init__(self, num_classes: int = 400, in_channels: int = 3, *, bn_eps: float = 1e-3,
                 padding: str = "tf_same") -> None:
        super().__init__()
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}")
        kw = dict(bn_eps=bn_eps, padding=padding)
        channels = in_channels
        self.endpoint_names = []
        for name, layer in arch.LAYERS:
            if isinstance(layer, arch.Conv):
                self.add_module(name, PiergiajUnit3D(channels, layer.out_channels, layer.kernel, layer.stride, **kw))
                channels = layer.out_channels
            elif isinstance(layer, arch.MaxPool):
                self.add_module(name, PiergiajMaxPool(layer.kernel, layer.stride, padding))
            else:
                self.add_module(name, PiergiajInception(channels, layer, **kw))
                channels = layer.out_channels
            self.endpoint_names.append(name)
        self.avg_pool = nn.AvgPool3d(arch.LOGITS_POOL_KERNEL, stride=1)
        self.dropout = nn.Dropout(0.0)
        self.logits = PiergiajUnit3D(channels, num_classes, (1, 1, 1), batch_norm=False, bias=True, relu=False, **kw)

    def forward_endpoints(self, x: torch.Tensor) -> dict:
        out = {}
        for name in self.endpoint_names:
            x = getattr(self, name)(x)
            out[name] = x
        out[arch.LOGITS_NAME] = self.logits(self.dropout(self.avg_pool(x))).mean(dim=(3, 4)).mean(dim=2)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.endpoint_names:
            x = getattr(self, name)(x)
        return self.logits(self.dropout(self.avg_pool(x))).squeeze(3).squeeze(3)

    def video_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).mean(dim=2)
