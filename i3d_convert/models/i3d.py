"""DeepMind's I3D in PyTorch, with TensorFlow's exact inference semantics.

Input layout NCTHW (batch, channels, time, height, width), values in [-1, 1].
State-dict keys mirror DeepMind's variable names:
``Mixed_3b/Branch_1/Conv3d_0b_3x3/conv_3d/w`` is
``Mixed_3b.Branch_1.Conv3d_0b_3x3.conv.weight``. This module knows nothing about
TensorFlow; the layer structure comes from :mod:`i3d_convert.architecture`.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from i3d_convert import architecture as arch
from i3d_convert.architecture import Triple
from i3d_convert.models import compiled_pool
from i3d_convert.models.endpoints import run_branches, run_endpoints


def _same_pads(sizes: Sequence[int], kernel: Triple, stride: Triple) -> List[Tuple[int, int]]:
    return [arch.tf_same_padding(n, k, s) for n, k, s in zip(sizes, kernel, stride)]


class BatchNormNoScale(nn.Module):
    """Batch norm with a learned offset and no scale, as Sonnet 1's ``snt.BatchNorm()``.

    ``y = (x - running_mean) / sqrt(running_var + eps) + bias`` over channel
    axis 1. Keys: ``bias`` (TF ``beta``), ``running_mean`` (``moving_mean``),
    ``running_var`` (``moving_variance``). In training mode it uses batch
    statistics and updates the running ones with ``momentum`` (= 1 - TF decay).
    """

    def __init__(self, num_features: int, eps: float = arch.BN_EPS, momentum: float = 1.0 - arch.BN_DECAY) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, None, self.bias, self.training, self.momentum, self.eps
        )

    def folded_scale_shift(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) such that ``bn(x) == x * scale + shift`` in eval mode."""
        scale = torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


def _conv3d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: Triple,
            padding: Sequence[int], relu: bool = False) -> torch.Tensor:
    """``F.conv3d`` (then ReLU if ``relu``), but float32/bfloat16 on CPU always takes oneDNN.

    PyTorch's heuristic sends batch-1 convolutions with small ``N*C*T*H`` and
    3x3 kernels to ``slow_conv3d_forward`` (im2col + gemm, ~2x slower here);
    oneDNN computes the same sums. The ReLU is a separate in-place pass, not
    oneDNN's post-op: the post-op maps NaN to 0 where TensorFlow's relu keeps
    NaN, and measured no faster. Used on the inference path only (no autograd).
    """
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available():
        args = (x, weight, bias, list(padding), list(stride), [1, 1, 1], 1)
        out = torch.ops.aten.mkldnn_convolution(*args)
    else:
        out = F.conv3d(x, weight, bias, stride, padding)
    return out.relu_() if relu else out


class Unit3D(nn.Module):
    """Conv3d with TF 'SAME' padding -> optional batch norm -> optional ReLU.

    For stride 1 and odd kernels 'SAME' is symmetric, so it is the conv's own
    ``padding`` (no extra tensor). Only strided convs (the stem) can need the
    asymmetric TF padding; it is worked out from the input's shape, the
    symmetric part is the conv's ``padding`` and only the extra pixel after is
    an ``F.pad``.

    Inference path (eval mode, autograd off, ``fuse_bn``): batch norm is folded
    into the conv -- ``w' = w * s``, ``b' = beta - mean * s`` with
    ``s = 1/sqrt(var + eps)``, computed in float64 and cached until a weight or
    statistic changes -- so a unit is one oneDNN convolution and an in-place
    ReLU. Training, or any forward that needs gradients, runs conv -> batch norm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple,
        stride: Triple = (1, 1, 1),
        *,
        batch_norm: bool = True,
        bias: bool = False,
        relu: bool = True,
        bn_eps: float = arch.BN_EPS,
        fuse_bn: bool = True,
    ) -> None:
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self._static_padding = all(s == 1 and k % 2 == 1 for k, s in zip(kernel, stride))
        padding = tuple(k // 2 for k in kernel) if self._static_padding else 0
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=padding, bias=bias)
        self.bn = BatchNormNoScale(out_channels, eps=bn_eps) if batch_norm else None
        self.relu = relu
        self.fuse_bn = fuse_bn
        self._folded: Optional[Tuple[tuple, torch.Tensor, Optional[torch.Tensor]]] = None

    def _padded(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[int]]:
        """The input (padded only if TF's padding is asymmetric) and the conv's own symmetric padding."""
        if self._static_padding:
            return x, [k // 2 for k in self.kernel]
        pads = _same_pads(x.shape[2:], self.kernel, self.stride)
        symmetric = [before for before, _after in pads]
        if all(before == after for before, after in pads):
            return x, symmetric
        # TF puts the odd pixel after (after - before is 0 or 1): pad only that explicitly and leave
        # the symmetric part to the convolution, which skips it instead of multiplying zeros
        # (the stem: 8x3x16x224x224 reads 21x229x229 frames padded in full, 17x225x225 this way).
        # F.pad lists the last axis first: (W_before, W_after, H_..., T_...).
        flat = [p for before, after in reversed(pads) for p in (0, after - before)]
        memory_format = torch.channels_last_3d if x.is_contiguous(memory_format=torch.channels_last_3d) else torch.contiguous_format
        return F.pad(x, flat).contiguous(memory_format=memory_format), symmetric

    def _folded_weights(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        tensors = [self.conv.weight] + ([self.conv.bias] if self.conv.bias is not None else [])
        if self.bn is not None and self.fuse_bn:
            tensors += [self.bn.bias, self.bn.running_mean, self.bn.running_var]
        try:
            key: Optional[tuple] = tuple((t.data_ptr(), t._version) for t in tensors)
            key += (x.dtype, x.device, self.bn.eps if self.bn else 0.0)
        except RuntimeError:  # parameters created under inference_mode have no version counter
            key = None
        if key is None or self._folded is None or self._folded[0] != key:
            weight, bias = self.conv.weight.detach(), self.conv.bias
            bias = bias.detach() if bias is not None else None
            if self.bn is not None and self.fuse_bn:
                scale, shift = (t.detach().double() for t in self.bn.folded_scale_shift())
                weight = weight.double() * scale.view(-1, 1, 1, 1, 1)
                bias = shift if bias is None else bias.double() * scale + shift
            weight = weight.to(x.dtype).contiguous(memory_format=torch.channels_last_3d)
            bias = bias.to(x.dtype) if bias is not None else None
            self._folded = (key, weight, bias)
        return self._folded[1], self._folded[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inference = not self.training and not torch.is_grad_enabled()
        x, padding = self._padded(x)
        if inference:
            if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and x.dtype == torch.float32:
                x = x.to(torch.get_autocast_dtype("cpu"))  # opt-in low precision: weights folded in float64, rounded once
            weight, bias = self._folded_weights(x)
            if self.bn is not None and not self.fuse_bn:
                x = self.bn(_conv3d(x, weight, bias, self.stride, padding))
                return x.relu_() if self.relu else x
            return _conv3d(x, weight, bias, self.stride, padding, relu=self.relu)
        x = F.conv3d(x, self.conv.weight, self.conv.bias, self.stride, padding)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max pool with TF 'SAME' padding, where padded positions never win.

    TF pads ``(before, after)`` with ``before <= after``. PyTorch's implicit
    pooling padding is -inf (so it never wins) and ``ceil_mode=True`` lets the
    last window run past the end, which is TF's extra *after* padding. Pooling
    with ``padding=before, ceil_mode=True`` therefore reproduces TF exactly
    whenever it yields TF's output size; other shapes fall back to an explicit
    -inf pad.
    """

    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        #: Set by :meth:`InceptionI3d.compile_max_pools`; per input shape, whether the compiled pool won.
        self.compiled = False
        self._compiled_wins: Dict[tuple, bool] = {}

    def _native_padding(self, sizes: Sequence[int]) -> Optional[List[int]]:
        padding = []
        for n, k, s, (before, _after) in zip(sizes, self.kernel, self.stride, _same_pads(sizes, self.kernel, self.stride)):
            if before > k // 2:
                return None
            torch_out = -(-(n + 2 * before - k) // s) + 1
            if (torch_out - 1) * s >= n + before:  # PyTorch drops a window starting in the right padding
                torch_out -= 1
            if torch_out != arch.tf_same_output_size(n, s):
                return None
            padding.append(before)
        return padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = x.shape[2:]
        padding = self._native_padding(sizes)
        if padding is not None:
            if self.compiled and x.device.type == "cpu" and not torch.is_grad_enabled() and self._compiled_faster(x, padding):
                return compiled_pool.compiled_max_pool3d(x, self.kernel, self.stride, padding)
            return F.max_pool3d(x, self.kernel, self.stride, padding, ceil_mode=True)
        pads = _same_pads(sizes, self.kernel, self.stride)
        flat = [p for before_after in reversed(pads) for p in before_after]
        return F.max_pool3d(F.pad(x, flat, value=float("-inf")), self.kernel, self.stride)

    def _compiled_faster(self, x: torch.Tensor, padding: List[int]) -> bool:
        key = (tuple(x.shape), x.stride(), x.dtype)
        if key not in self._compiled_wins:
            self._compiled_wins[key] = compiled_pool.compiled_wins(x, self.kernel, self.stride, padding)
        return self._compiled_wins[key]

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding=TF SAME"


class _Namespace(nn.Module):
    """A module that only groups children, so state-dict keys follow DeepMind's scopes."""


class Mixed(nn.Module):
    """Inception block: four branches concatenated along channels."""

    def __init__(self, name: str, spec: arch.Mixed, in_channels: int, bn_eps: float, fuse_bn: bool = True) -> None:
        super().__init__()
        units = arch.mixed_branch_units(name, spec, in_channels)
        for branch in ("Branch_0", "Branch_1", "Branch_2", "Branch_3"):
            self.add_module(branch, _Namespace())
        for unit in units:
            _, branch, conv_name = unit.path.split("/")
            getattr(self, branch).add_module(
                conv_name,
                Unit3D(unit.in_channels, unit.out_channels, unit.kernel, unit.stride, bn_eps=bn_eps, fuse_bn=fuse_bn),
            )
        self.Branch_3.add_module(arch.MIXED_POOL_NAME, MaxPool3dSame(arch.MIXED_POOL.kernel, arch.MIXED_POOL.stride))
        self._branches = [[getattr(getattr(self, u.path.split("/")[1]), u.path.split("/")[2]) for u in units[i:j]]
                          for i, j in ((0, 1), (1, 3), (3, 5))]
        self._branch_3 = [getattr(self.Branch_3, arch.MIXED_POOL_NAME), self.Branch_3.Conv3d_0b_1x1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_branches(x, self._branches + [self._branch_3])


class Logits(nn.Module):
    """Avg-pool [2,7,7] stride 1 VALID -> dropout -> 1x1x1 conv with bias -> mean over time.

    DeepMind squeezes the two spatial axes (size 1 for 224x224 input) and
    averages over time. For other input sizes the spatial axes are averaged
    too, which equals DeepMind's result whenever theirs is defined.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.add_module(
            arch.LOGITS_CONV_NAME,
            Unit3D(in_channels, num_classes, (1, 1, 1), batch_norm=False, bias=True, relu=False),
        )

    @property
    def classifier(self) -> Unit3D:
        return getattr(self, arch.LOGITS_CONV_NAME)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
            # PyTorch's CPU avg_pool3d has no 16-bit kernel; the pooled map is tiny.
            return F.avg_pool3d(x.float(), arch.LOGITS_POOL_KERNEL, stride=1).to(x.dtype)
        return F.avg_pool3d(x, arch.LOGITS_POOL_KERNEL, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.classifier(self.dropout(self.pool(x)))
        if x.shape[3] == 1 and x.shape[4] == 1:
            return x.squeeze(4).squeeze(3).mean(dim=2)
        return x.mean(dim=(2, 3, 4))


class InceptionI3d(nn.Module):
    """DeepMind's I3D network.

    Args:
        num_classes: logits (400 for Kinetics-400, 600 for Kinetics-600).
        in_channels: 3 for RGB, 2 for optical flow.
        dropout: dropout probability before the logits conv (DeepMind's
            ``1 - dropout_keep_prob``; identity in eval mode).
        bn_eps: batch-norm epsilon; 1e-3 is what every release was trained with.
        final_endpoint: build the network only up to this endpoint.
        fuse_bn: on the inference path (eval mode with autograd off, e.g. under
            ``torch.inference_mode()``) fold each batch norm into its conv.

    Inference (eval mode, autograd off) runs in ``channels_last_3d`` with
    batch norms folded into the convs and every float32 CPU convolution on
    oneDNN; training and gradient-carrying forwards run the plain modules.
    Both compute DeepMind's function (see tests/test_parity_tf.py).

    ``forward(x)`` maps ``[B, in_channels, T, H, W]`` (values in [-1, 1]) to
    ``[B, num_classes]`` logits (or to ``final_endpoint``'s activation when
    that is not ``Logits``). For 224x224 input T must be at least 9 so that
    Mixed_5c has the two time steps the Logits pool needs.
    """

    def __init__(
        self,
        num_classes: int = arch.NUM_CLASSES_400,
        in_channels: int = arch.RGB_CHANNELS,
        *,
        dropout: float = 0.0,
        bn_eps: float = arch.BN_EPS,
        final_endpoint: str = arch.LOGITS_NAME,
        fuse_bn: bool = True,
    ) -> None:
        super().__init__()
        if final_endpoint not in arch.ENDPOINTS:
            raise ValueError(f"unknown endpoint {final_endpoint!r}; valid: {', '.join(arch.ENDPOINTS)}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.bn_eps = bn_eps
        self.final_endpoint = final_endpoint
        self.endpoint_names: Tuple[str, ...] = arch.ENDPOINTS[: arch.ENDPOINTS.index(final_endpoint) + 1]
        channels = in_channels
        for name, layer in arch.LAYERS:
            if name not in self.endpoint_names:
                break
            if isinstance(layer, arch.Conv):
                self.add_module(
                    name, Unit3D(channels, layer.out_channels, layer.kernel, layer.stride, bn_eps=bn_eps, fuse_bn=fuse_bn)
                )
                channels = layer.out_channels
            elif isinstance(layer, arch.MaxPool):
                self.add_module(name, MaxPool3dSame(layer.kernel, layer.stride))
            else:
                self.add_module(name, Mixed(name, layer, channels, bn_eps, fuse_bn))
                channels = layer.out_channels
        if arch.LOGITS_NAME in self.endpoint_names:
            self.add_module(arch.LOGITS_NAME, Logits(channels, num_classes, dropout))
        self.num_features = channels

    def forward_endpoints(self, x: torch.Tensor, endpoints: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
        """Run up to the last requested endpoint; return ``{name: activation}``.

        Activations are NCTHW; ``Logits`` is ``[B, num_classes]``. With
        ``endpoints=None`` every endpoint the model has is returned.
        """
        endpoints = None if endpoints is None else list(endpoints)
        unknown = set(endpoints or ()) - set(self.endpoint_names)
        if unknown:  # before the input checks: a wrong name is the first thing to report
            raise ValueError(f"unknown or unbuilt endpoints {sorted(unknown)}; this model has {self.endpoint_names}")
        self._check_input(x)
        if not self.training and not torch.is_grad_enabled():
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return run_endpoints(self, self.endpoint_names, x, endpoints)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_5c activation, ``[B, 1024, T/8, H/32, W/32]``."""
        return self.forward_endpoints(x, ["Mixed_5c"])["Mixed_5c"]

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The 1024-d clip feature (``features --endpoint pool``): Mixed_5c averaged over time and space.
        (FVD does not use it: its feature is the 400 time-averaged logits, :mod:`i3d_convert.fvd.network`.)"""
        return self.forward_features(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_endpoints(x, [self.final_endpoint])[self.final_endpoint]

    def compile_max_pools(self, enabled: bool = True) -> int:
        """Opt-in for long CPU inference runs: max pools compiled by TorchInductor where, for each input
        shape, a check on the first call finds them bit-identical and faster (3-7 % of a forward measured,
        docs/benchmarks.md). Needs a C++ compiler; costs seconds of compilation per clip shape; falls back
        to the eager pools with one warning when compiling fails. Returns the number of pools switched."""
        pools = [m for m in self.modules() if isinstance(m, MaxPool3dSame)]
        for pool in pools:
            pool.compiled = enabled
        return len(pools)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input [B, {self.in_channels}, T, H, W] (NCTHW), got {list(x.shape)}"
            )
