"""The inflation rule of Inception-v1: 2D kernels -> I3D's 5-D kernels, the flow stem and the logits head.

I3D starts from a 2D ImageNet network and repeats every ``kH x kW`` kernel
``kT`` times along time, divided by ``kT`` (``mean`` mode), so that a "boring"
video -- one frame repeated -- gives every layer the 2D network's activation on
that frame. ``center`` mode puts the 2D kernel in the central time slice and
zeros elsewhere (each output step then sees one frame per conv).

The temporal kernel size of every I3D conv is the one in
:mod:`i3d_convert.architecture` (stem 7, ``Conv3d_2c_3x3`` 3, the inception
3x3 branches 3, 1x1 convs and the logits 1). docs/inflate.md explains the
choices (flow stem, logits) and the measured numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Optional, Tuple

import numpy as np

from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError
from i3d_convert.inflation.sources import CONV_B, CONV_W, DROP_HEAD, Weights2D

#: How a 2D kernel is spread over ``kT`` time steps.
MODES: Tuple[str, ...] = ("mean", "center")
#: Channels feeding the logits conv (Mixed_5c).
LOGITS_IN = arch.FEATURE_CHANNELS

def time_kernels(in_channels: int = arch.RGB_CHANNELS, num_classes: int = arch.NUM_CLASSES_400) -> Dict[str, int]:
    """``{I3D conv unit path: temporal kernel size}``, read off the architecture table (58 convs)."""
    return {unit.path: unit.kernel[0] for unit in arch.iter_conv_units(in_channels, num_classes)}


# --------------------------------------------------------------------------- inflation


def inflate_kernel(kernel_2d: np.ndarray, time_size: int, mode: str = "mean") -> np.ndarray:
    """``[kH, kW, Cin, Cout]`` -> ``[kT, kH, kW, Cin, Cout]`` (TF layout).

    ``mean``: every time slice is ``w / kT``, so a constant-in-time input gives
    the 2D response. ``center``: slice ``kT // 2`` is ``w``, the others zero.
    ``kT = 1`` only adds the axis (both modes).
    """
    check_mode(mode)
    if time_size < 1:
        raise I3DConvertError(f"temporal kernel size must be >= 1, got {time_size}")
    kernel_2d = np.asarray(kernel_2d)
    if time_size == 1:
        return kernel_2d[None].copy()
    out = np.zeros((time_size,) + kernel_2d.shape, dtype=kernel_2d.dtype)
    if mode == "mean":
        out[:] = kernel_2d / kernel_2d.dtype.type(time_size)
    else:
        out[time_size // 2] = kernel_2d
    return out


def adapt_stem_channels(kernel_2d: np.ndarray, in_channels: int) -> np.ndarray:
    """The stem kernel ``[kH, kW, C, Cout]`` for ``in_channels`` inputs (the flow-stream policy).

    Unchanged when ``in_channels == C``. Otherwise every new input channel gets
    ``sum over the C source channels / in_channels``: the RGB filter's response
    to a grey frame ``(g, g, g)`` is then exactly the new filter's response to
    an input with every channel ``g``, so the activations that the rest of the
    network was trained on keep their scale (TSN's cross-modality average,
    rescaled by ``C / in_channels``; for flow, ``3/2`` times the RGB mean).
    """
    kernel_2d = np.asarray(kernel_2d)
    if in_channels < 1:
        raise I3DConvertError(f"{{arg}} must be >= 1, got {in_channels}", argument="in_channels")
    if in_channels == kernel_2d.shape[2]:
        return kernel_2d
    total = kernel_2d.astype(np.float64).sum(axis=2, keepdims=True) / in_channels
    return np.repeat(total, in_channels, axis=2).astype(kernel_2d.dtype)


def new_logits(num_classes: int, seed: int = 0, in_features: int = LOGITS_IN) -> Tuple[np.ndarray, np.ndarray]:
    """A freshly initialised logits layer: kernel ``[1, 1, in, C]`` and zero bias ``[C]``, float32.

    The kernel is Sonnet 1's default for ``snt.Conv3D`` (which DeepMind's
    ``Unit3D`` uses): a truncated normal with stddev ``1/sqrt(fan_in)``, values
    beyond two standard deviations redrawn. Drawn with ``numpy.random.default_rng(seed)``.
    """
    if num_classes < 1:
        raise I3DConvertError(f"{{arg}} must be >= 1, got {num_classes}", argument="num_classes")
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((in_features, num_classes))
    while True:
        outside = np.abs(values) > 2.0
        if not outside.any():
            break
        values[outside] = rng.standard_normal(int(outside.sum()))
    kernel = (values / np.sqrt(in_features)).astype(np.float32).reshape(1, 1, in_features, num_classes)
    return kernel, np.zeros(num_classes, np.float32)


def check_mode(mode: str) -> None:
    """Raise :class:`I3DConvertError` unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise I3DConvertError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")


@dataclass(frozen=True)
class InflationOptions:
    """How a 2D Inception-v1 becomes I3D (see :func:`inflate_weights`).

    mode: ``mean`` or ``center`` (:func:`inflate_kernel`). in_channels: 3 (RGB) or 2
    (flow; the stem per :func:`adapt_stem_channels`). num_classes: ``None`` keeps the
    ImageNet head. reinit_logits: a new head even when the class count matches.
    seed: seed of a new head (:func:`new_logits`).
    """

    mode: str = "mean"
    in_channels: int = arch.RGB_CHANNELS
    num_classes: Optional[int] = None
    reinit_logits: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_mode(self.mode)

    @classmethod
    def of(cls, options: Optional["InflationOptions"], keywords: Dict[str, Any]) -> "InflationOptions":
        """``options`` (or the defaults) with ``keywords`` replacing fields; an unknown keyword is a TypeError."""
        return replace(options if options is not None else cls(), **keywords)


@dataclass
class InflatedArrays:
    """:func:`inflate_weights`' result: I3D TF-named arrays plus what was done."""

    arrays: Dict[str, np.ndarray]  # I3D TF name (no scope) -> TF layout ([kT,kH,kW,Cin,Cout] / [C])
    num_classes: int
    in_channels: int
    logits: str  # how the logits layer was made
    stem: str  # how the stem's input channels were made
    dropped: Dict[str, str]  # source tensor -> reason (the source's and the head's)
    sources: Dict[str, Tuple[str, ...]]  # I3D TF name -> source tensors


def inflate_weights(weights: Weights2D, options: Optional[InflationOptions] = None, **settings: Any) -> InflatedArrays:
    """Inflate a 2D Inception-v1 into I3D's TF-named arrays.

    The settings are the fields of :class:`InflationOptions`, given as ``options``
    and/or as keywords (``inflate_weights(w, num_classes=400)``; keywords override).

    Temporal kernel sizes come from :func:`time_kernels` (the architecture table).
    ``num_classes=None`` keeps the ImageNet head with 1000 classes (slim's
    background class 0 dropped). A class count equal to the source's (1001 for
    slim, 1000 for torchvision) carries the head over; any other count, or
    ``reinit_logits``, makes a new head with :func:`new_logits` (``seed``).
    """
    opts = InflationOptions.of(options, settings)
    mode, in_channels, num_classes, seed = opts.mode, opts.in_channels, opts.num_classes, opts.seed
    source_imagenet = weights.num_classes - (1 if weights.background_class else 0)
    target = source_imagenet if num_classes is None else int(num_classes)
    if target < 1:
        raise I3DConvertError(f"{{arg}} must be >= 1, got {target}", argument="num_classes")
    kernels = time_kernels(in_channels, target)
    logits_path = f"{arch.LOGITS_NAME}/{arch.LOGITS_CONV_NAME}"
    w_name, b_name = f"{logits_path}/{CONV_W}", f"{logits_path}/{CONV_B}"
    stem_name = f"{arch.LAYERS[0][0]}/{CONV_W}"
    out: Dict[str, np.ndarray] = {}
    sources = dict(weights.sources)
    dropped = dict(weights.dropped)
    for name, array in weights.arrays.items():
        if name in (w_name, b_name):
            continue
        if name.endswith(CONV_W):
            if name == stem_name:
                array = adapt_stem_channels(array, in_channels)
            out[name] = inflate_kernel(array, kernels[name[: -len(CONV_W) - 1]], mode)
        else:
            out[name] = array
    source_channels = weights.arrays[stem_name].shape[2]
    stem = ("as in the source" if in_channels == source_channels else
            f"{source_channels}->{in_channels} channels: each new channel = sum of the source's "
            f"{source_channels} channels / {in_channels} (grey-equivalent)")
    w, b = weights.arrays[w_name], weights.arrays[b_name]
    if not opts.reinit_logits and target == weights.num_classes:
        logits = f"carried over from the source's {target}-class head"
    elif not opts.reinit_logits and weights.background_class and target == source_imagenet:
        w, b = w[..., 1:], b[1:]
        logits = f"carried over from the source's head with its background class 0 dropped ({target} ImageNet classes)"
    else:
        w, b = (a.astype(w.dtype) for a in new_logits(target, seed, w.shape[2]))
        logits = (f"re-initialised for {target} classes: truncated normal (2 sd), sd 1/sqrt({w.shape[2]}), "
                  f"zero bias, numpy default_rng({seed})")
        for src in sources.pop(w_name, ()) + sources.pop(b_name, ()):
            dropped[src] = DROP_HEAD
    out[w_name], out[b_name] = w[None], b
    return InflatedArrays(out, target, in_channels, logits, stem, dropped, sources)


