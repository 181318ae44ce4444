"""The one table of DeepMind's I3D (Inception-v1 inflated to 3D).

Everything else -- the PyTorch model, the name mapping, the synthetic
checkpoints, inflation -- reads the layer structure from here. The table follows
``InceptionI3d`` in DeepMind's ``kinetics-i3d/i3d.py`` endpoint by endpoint.

Sizes are written (time, height, width). TensorFlow stores a conv kernel as
``[kT, kH, kW, in, out]``; PyTorch as ``[out, in, kT, kH, kW]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple, Union

Triple = Tuple[int, int, int]

#: Sonnet 1 ``snt.BatchNorm`` default epsilon, used by every released checkpoint.
BN_EPS = 1e-3
#: Sonnet 1 ``snt.BatchNorm`` default decay (PyTorch momentum = 1 - decay).
BN_DECAY = 0.999
#: Kinetics-400 / Kinetics-600 class counts.
NUM_CLASSES_400 = 400
NUM_CLASSES_600 = 600
#: Input channels of the two streams.
RGB_CHANNELS = 3
FLOW_CHANNELS = 2
#: DeepMind's sample clips and the spatial size the Logits pool expects.
INPUT_SIZE = 224
#: Channels of the last feature map (Mixed_5c) and of the pooled clip feature (FVD uses the 400 logits instead).
FEATURE_CHANNELS = 1024


@dataclass(frozen=True)
class Conv:
    """A ``Unit3D``: conv3d (TF 'SAME', no bias) -> batch norm (no scale) -> ReLU."""

    out_channels: int
    kernel: Triple
    stride: Triple = (1, 1, 1)


@dataclass(frozen=True)
class MaxPool:
    """A max pool with TF 'SAME' padding (padded positions never win)."""

    kernel: Triple
    stride: Triple


@dataclass(frozen=True)
class Mixed:
    """An inception block; the four branches are concatenated along channels.

    Branch_0: 1x1. Branch_1: 1x1 -> 3x3. Branch_2: 1x1 -> 3x3 (Inception-v1's
    "5x5" branch is a 3x3, as in TF-slim). Branch_3: 3x3x3 max pool (stride 1)
    -> 1x1.
    """

    branch_0: int
    branch_1: Tuple[int, int]
    branch_2: Tuple[int, int]
    branch_3: int
    #: Name of Branch_2's 3x3 conv: ``Conv3d_0b_3x3`` except in Mixed_5b, where
    #: DeepMind's (and TF-slim's) checkpoints say ``Conv3d_0a_3x3``.
    branch_2_conv_name: str = "Conv3d_0b_3x3"

    @property
    def out_channels(self) -> int:
        return self.branch_0 + self.branch_1[1] + self.branch_2[1] + self.branch_3


Layer = Union[Conv, MaxPool, Mixed]

#: Endpoints in forward order, as DeepMind's ``VALID_ENDPOINTS`` (minus Logits
#: and Predictions, which are built from :data:`LOGITS_POOL` below).
LAYERS: Tuple[Tuple[str, Layer], ...] = (
    ("Conv3d_1a_7x7", Conv(64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", MaxPool((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", Conv(64, (1, 1, 1))),
    ("Conv3d_2c_3x3", Conv(192, (3, 3, 3))),
    ("MaxPool3d_3a_3x3", MaxPool((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", Mixed(64, (96, 128), (16, 32), 32)),
    ("Mixed_3c", Mixed(128, (128, 192), (32, 96), 64)),
    ("MaxPool3d_4a_3x3", MaxPool((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", Mixed(192, (96, 208), (16, 48), 64)),
    ("Mixed_4c", Mixed(160, (112, 224), (24, 64), 64)),
    ("Mixed_4d", Mixed(128, (128, 256), (24, 64), 64)),
    ("Mixed_4e", Mixed(112, (144, 288), (32, 64), 64)),
    ("Mixed_4f", Mixed(256, (160, 320), (32, 128), 128)),
    ("MaxPool3d_5a_2x2", MaxPool((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", Mixed(256, (160, 320), (32, 128), 128, branch_2_conv_name="Conv3d_0a_3x3")),
    ("Mixed_5c", Mixed(384, (192, 384), (48, 128), 128)),
)

#: Inside every Mixed block: the stride-1 3x3x3 max pool of Branch_3.
MIXED_POOL = MaxPool((3, 3, 3), (1, 1, 1))
MIXED_POOL_NAME = "MaxPool3d_0a_3x3"

#: Logits block: average pool [2, 7, 7], stride 1, 'VALID'; then dropout and a
#: 1x1x1 conv with bias and no batch norm or activation; then the spatial axes
#: are squeezed and the result averaged over time.
LOGITS_POOL_KERNEL: Triple = (2, 7, 7)
LOGITS_NAME = "Logits"
LOGITS_CONV_NAME = "Conv3d_0c_1x1"

#: Every endpoint name a model can return, in order.
ENDPOINTS: Tuple[str, ...] = tuple(name for name, _ in LAYERS) + (LOGITS_NAME,)

#: Sub-module names of a Unit3D, TF scope -> PyTorch attribute.
TF_CONV_SCOPE = "conv_3d"
TF_BN_SCOPE = "batch_norm"


@dataclass(frozen=True)
class ConvUnit:
    """One conv layer of the network with its full path and channel counts.

    ``path`` is DeepMind's scope without the model prefix, e.g.
    ``Mixed_3b/Branch_1/Conv3d_0b_3x3``.
    """

    path: str
    in_channels: int
    out_channels: int
    kernel: Triple
    stride: Triple
    batch_norm: bool = True
    bias: bool = False
    relu: bool = True

    @property
    def torch_prefix(self) -> str:
        """The module path in :class:`~i3d_convert.models.i3d.InceptionI3d`."""
        return self.path.replace("/", ".")


def mixed_branch_units(name: str, block: Mixed, in_channels: int) -> Tuple[ConvUnit, ...]:
    """The five convs of a Mixed block, in DeepMind's creation order."""
    one, three = (1, 1, 1), (3, 3, 3)
    return (
        ConvUnit(f"{name}/Branch_0/Conv3d_0a_1x1", in_channels, block.branch_0, one, one),
        ConvUnit(f"{name}/Branch_1/Conv3d_0a_1x1", in_channels, block.branch_1[0], one, one),
        ConvUnit(f"{name}/Branch_1/Conv3d_0b_3x3", block.branch_1[0], block.branch_1[1], three, one),
        ConvUnit(f"{name}/Branch_2/Conv3d_0a_1x1", in_channels, block.branch_2[0], one, one),
        ConvUnit(
            f"{name}/Branch_2/{block.branch_2_conv_name}",
            block.branch_2[0],
            block.branch_2[1],
            three,
            one,
        ),
        ConvUnit(f"{name}/Branch_3/Conv3d_0b_1x1", in_channels, block.branch_3, one, one),
    )


def iter_conv_units(in_channels: int = RGB_CHANNELS, num_classes: int = NUM_CLASSES_400) -> Iterator[ConvUnit]:
    """Every conv of the network in forward order, the logits conv last (58 in all)."""
    channels = in_channels
    for name, layer in LAYERS:
        if isinstance(layer, Conv):
            yield ConvUnit(name, channels, layer.out_channels, layer.kernel, layer.stride)
            channels = layer.out_channels
        elif isinstance(layer, Mixed):
            yield from mixed_branch_units(name, layer, channels)
            channels = layer.out_channels
    yield ConvUnit(
        f"{LOGITS_NAME}/{LOGITS_CONV_NAME}",
        channels,
        num_classes,
        (1, 1, 1),
        (1, 1, 1),
        batch_norm=False,
        bias=True,
        relu=False,
    )


def endpoint_channels(in_channels: int = RGB_CHANNELS, num_classes: int = NUM_CLASSES_400) -> dict:
    """Output channels of every endpoint, e.g. ``{"Mixed_5c": 1024, "Logits": 400}``."""
    out: dict = {}
    channels = in_channels
    for name, layer in LAYERS:
        if isinstance(layer, (Conv, Mixed)):
            channels = layer.out_channels
        out[name] = channels
    out[LOGITS_NAME] = num_classes
    return out


def tf_same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow 'SAME' padding of one axis as (before, after).

    The output has ``ceil(size / stride)`` positions; the total padding that
    needs is split with the smaller half *before* and the odd pixel *after*
    (unlike PyTorch's symmetric ``padding=``), which is what makes naive ports
    drift on even-sized inputs with stride 2.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def tf_same_output_size(size: int, stride: int) -> int:
    return -(-size // stride)


def unit_by_path(in_channels: int = RGB_CHANNELS, num_classes: int = NUM_CLASSES_400) -> dict:
    return {unit.path: unit for unit in iter_conv_units(in_channels, num_classes)}


def find_layer(name: str) -> Optional[Layer]:
    for layer_name, layer in LAYERS:
        if layer_name == name:
            return layer
    return None


def min_logits_input() -> Tuple[int, int, int]:
    """Smallest ``(T, H, W)`` for which the Logits block's ``[2, 7, 7]`` VALID pool has an output.

    Computed from the layer table: (9, 193, 193).
    """
    strides = [layer.stride for _, layer in LAYERS if isinstance(layer, (Conv, MaxPool))]
    out = []
    for axis, need in enumerate(LOGITS_POOL_KERNEL):
        n = 1
        while True:
            size = n
            for stride in strides:
                size = tf_same_output_size(size, stride[axis])
            if size >= need:
                break
            n += 1
        out.append(n)
    return tuple(out)  # type: ignore[return-value]


#: Fewest frames whose Logits exist at 224x224 (the [2, 7, 7] VALID pool needs 2 time steps of Mixed_5c).
MIN_LOGITS_FRAMES = min_logits_input()[0]
