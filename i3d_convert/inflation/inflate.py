"""i3d-inflate: 2D ImageNet CNN weights -> 3D video-network weights (I3D's bootstrapping).

I3D starts from a 2D ImageNet network and repeats every ``kH x kW`` kernel
``kT`` times along time, divided by ``kT`` (``mean`` mode), so that a "boring"
video -- one frame repeated -- gives every layer the 2D network's activation on
that frame. ``center`` mode puts the 2D kernel in the central time slice and
zeros elsewhere (each output step then sees one frame per conv).

Pipeline, one pure function per step::

    source file --read_slim / read_torchvision--> {source tensor name: array}
        --slim_to_2d / torchvision_to_2d--> Weights2D   (I3D's names, 2D kernels, gamma folded)
        --inflate_weights--> {I3D TF name: 5-D array}   (temporal kernels from architecture.py)
        --mapping.tf_to_torch_arrays--> InceptionI3d state_dict (strict, 230 tensors)

Sources:

* ``slim``: TF-slim's ``inception_v1.ckpt`` (``InceptionV1/...``, 1001 classes
  with "background" at 0, batch norm without scale), TF V1 single-file format
  or a V2 bundle, read without TensorFlow by :mod:`i3d_convert.io.checkpoint_reader`.
* ``torchvision``: ``googlenet`` state_dict (``.pth`` read with
  ``weights_only=True``, or ``.safetensors``); batch-norm scales are folded
  exactly into the conv kernel and moving mean; aux heads are dropped.
* ``timm:NAME``: any 2D CNN built from plain conv/bn/pool layers, inflated
  module by module with :func:`inflate_module` (the I3D-ResNet recipe).

The temporal kernel size of every I3D conv is the one in
:mod:`i3d_convert.architecture` (stem 7, ``Conv3d_2c_3x3`` 3, the inception
3x3 branches 3, 1x1 convs and the logits 1). docs/inflate.md explains the
choices (flow stem, logits) and the measured numbers.
"""

from __future__ import annotations

import copy
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from i3d_convert._version import __version__
from i3d_convert import architecture as arch
from i3d_convert.conversion.tf_to_torch import sha256_of_files
from i3d_convert.errors import I3DConvertError, MappingError
from i3d_convert.names.slim import SLIM_SCOPE, slim_name
from i3d_convert.names.tf1 import mapping_table, skip_reason, tf_to_torch_arrays

#: How a 2D kernel is spread over ``kT`` time steps.
MODES: Tuple[str, ...] = ("mean", "center")
#: ``--source-format`` values; ``timm:NAME`` names a timm model.
SOURCE_FORMATS: Tuple[str, ...] = ("slim", "torchvision", "timm:NAME")
TIMM_PREFIX = "timm:"

#: TF-slim's model scope in ``inception_v1.ckpt``.
#: ImageNet classes without slim's extra "background" class (index 0).
IMAGENET_CLASSES = 1000
#: Channels feeding the logits conv (Mixed_5c).
LOGITS_IN = arch.FEATURE_CHANNELS

#: torchvision ``GoogLeNet`` module of each I3D stem conv and inception block.
TORCHVISION_LAYERS: Dict[str, str] = {
    "Conv3d_1a_7x7": "conv1",
    "Conv3d_2b_1x1": "conv2",
    "Conv3d_2c_3x3": "conv3",
    "Mixed_3b": "inception3a",
    "Mixed_3c": "inception3b",
    "Mixed_4b": "inception4a",
    "Mixed_4c": "inception4b",
    "Mixed_4d": "inception4c",
    "Mixed_4e": "inception4d",
    "Mixed_4f": "inception4e",
    "Mixed_5b": "inception5a",
    "Mixed_5c": "inception5b",
    arch.LOGITS_NAME: "fc",
}
#: torchvision's module inside a block for the six convs of :func:`architecture.mixed_branch_units`
#: (Branch_0 1x1, Branch_1 1x1 / 3x3, Branch_2 1x1 / 3x3, Branch_3 1x1; ``branch4.0`` is the max pool).
TORCHVISION_BRANCHES: Tuple[str, ...] = ("branch1", "branch2.0", "branch2.1", "branch3.0", "branch3.1", "branch4.1")
TORCHVISION_AUX_HEADS: Tuple[str, ...] = ("aux1.", "aux2.")

_CONV_W = f"{arch.TF_CONV_SCOPE}/w"
_CONV_B = f"{arch.TF_CONV_SCOPE}/b"
_BN = {"beta": "beta", "moving_mean": "moving_mean", "moving_variance": "moving_variance"}

#: Why a source tensor has no place in I3D.
DROP_AUX = "torchvision auxiliary classifier (not part of Inception-v1 at inference; torchvision says its aux heads are not pretrained)"
DROP_COUNTER = "batch-norm update counter (training bookkeeping, no value)"
DROP_HEAD = "ImageNet classifier replaced by a re-initialised head"


# --------------------------------------------------------------------------- names


def torchvision_module(unit_path: str) -> str:
    """torchvision ``GoogLeNet`` module of an I3D conv unit, e.g. ``Mixed_3b/Branch_1/Conv3d_0b_3x3`` -> ``inception3a.branch2.1``."""
    head = unit_path.split("/")[0]
    module = TORCHVISION_LAYERS[head]
    layer = arch.find_layer(head)
    if isinstance(layer, arch.Mixed):
        # Channel counts do not matter for names; any in_channels gives the same paths.
        paths = [u.path for u in arch.mixed_branch_units(head, layer, 1)]
        module += "." + TORCHVISION_BRANCHES[paths.index(unit_path)]
    return module


def time_kernels(in_channels: int = arch.RGB_CHANNELS, num_classes: int = arch.NUM_CLASSES_400) -> Dict[str, int]:
    """``{I3D conv unit path: temporal kernel size}``, read off the architecture table (58 convs)."""
    return {unit.path: unit.kernel[0] for unit in arch.iter_conv_units(in_channels, num_classes)}


# --------------------------------------------------------------------------- 2D weights


@dataclass
class Weights2D:
    """A 2D Inception-v1 in I3D's names: the stage between reading a source and inflating it.

    ``arrays`` maps I3D TF names below the scope (``Mixed_3b/Branch_1/Conv3d_0b_3x3/conv_3d/w``)
    to floating arrays (float32 for every published source): conv kernels in HWIO
    ``[kH, kW, Cin, Cout]`` (the logits kernel ``[1, 1, 1024, C]``), batch-norm
    vectors and the logits bias ``[C]``.
    Batch norm has no scale (a source's scale is already folded in).
    """

    arrays: Dict[str, np.ndarray]
    source_format: str
    num_classes: int  # of the source's head
    background_class: bool  # slim: class 0 is "background"
    sources: Dict[str, Tuple[str, ...]] = field(default_factory=dict)  # I3D TF name -> source tensors
    dropped: Dict[str, str] = field(default_factory=dict)  # source tensor -> reason
    path: Optional[str] = None


def _floating(array, name: str, path: Optional[str]) -> np.ndarray:
    """float32 and float64 are kept (float64 makes the float64 exactness tests possible); halves become float32."""
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise MappingError(f"tensor {name!r} has dtype {array.dtype}, expected floating point", path)
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float32)


def _shape_problem(array: np.ndarray, expected: Tuple[int, ...], name: str, path: Optional[str],
                   what: str) -> Optional[MappingError]:
    if tuple(array.shape) != tuple(expected):
        return MappingError(f"tensor {name!r} has shape {list(array.shape)}, expected {list(expected)} for {what}", path)
    return None


def _source_classes(shape: Sequence[int], name: str, path: Optional[str], axis: int) -> int:
    if len(shape) <= axis or shape[axis] < 1:
        raise MappingError(f"classifier {name!r} has shape {list(shape)}; cannot read the number of classes", path)
    return int(shape[axis])


def _missing(names: List[str], path: Optional[str], what: str) -> MappingError:
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    return MappingError(f"not a {what}: missing tensor {names[0]!r}{more}", path)


def slim_to_2d(arrays: Mapping[str, np.ndarray], path: Optional[str] = None) -> Weights2D:
    """TF-slim ``InceptionV1`` variables -> :class:`Weights2D` (strict: every variable used or named as dropped).

    Optimizer slots and ``global_step`` (absent from the released file) are
    dropped with their reason; any other unknown variable is an error.
    """
    logits_w = f"{SLIM_SCOPE}{slim_name(arch.LOGITS_NAME + '/' + arch.LOGITS_CONV_NAME)}/weights"
    if logits_w not in arrays:
        raise _missing([logits_w], path, "TF-slim InceptionV1 checkpoint")
    num_classes = _source_classes(np.shape(arrays[logits_w]), logits_w, path, 3)
    out: Dict[str, np.ndarray] = {}
    sources: Dict[str, Tuple[str, ...]] = {}
    missing: List[str] = []
    misshapen: List[MappingError] = []
    for unit in arch.iter_conv_units(arch.RGB_CHANNELS, num_classes):
        scope = SLIM_SCOPE + slim_name(unit.path)
        rules = [(f"{scope}/weights", f"{unit.path}/{_CONV_W}", unit.kernel[1:] + (unit.in_channels, unit.out_channels))]
        if unit.bias:
            rules.append((f"{scope}/biases", f"{unit.path}/{_CONV_B}", (unit.out_channels,)))
        if unit.batch_norm:
            rules += [(f"{scope}/BatchNorm/{s}", f"{unit.path}/{arch.TF_BN_SCOPE}/{t}", (unit.out_channels,))
                      for s, t in _BN.items()]
        for src, dst, shape in rules:
            if src not in arrays:
                missing.append(src)
                continue
            array = _floating(arrays[src], src, path)
            problem = _shape_problem(array, shape, src, path, f"{dst} (2D)")
            if problem is not None:
                misshapen.append(problem)
            out[dst], sources[dst] = array, (src,)
    if missing:
        raise _missing(missing, path, "TF-slim InceptionV1 checkpoint")
    if misshapen:
        raise misshapen[0]
    used = {s for names in sources.values() for s in names}
    dropped: Dict[str, str] = {}
    for name in arrays:
        if name in used:
            continue
        reason = skip_reason(name)
        if reason is None:
            raise MappingError(f"unknown variable {name!r}: it is not part of TF-slim's InceptionV1", path)
        dropped[name] = reason
    return Weights2D(out, "slim", num_classes, num_classes == IMAGENET_CLASSES + 1, sources, dropped, path)


def torchvision_to_2d(state_dict: Mapping[str, "np.ndarray | torch.Tensor"], path: Optional[str] = None) -> Weights2D:
    """torchvision ``googlenet`` state_dict -> :class:`Weights2D`.

    Batch norm ``y = g (x - m) / s + b`` (``g`` = ``bn.weight``) is folded into
    I3D's scale-free batch norm exactly: ``g (conv(x, w) - m) / s + b ==
    (conv(x, g w) - g m) / s + b``, so the kernel becomes ``g * w`` and the moving
    mean ``g * m`` (per output channel); ``bn.bias`` and ``running_var`` are
    unchanged. ``fc`` (``[C, 1024]``) becomes the 1x1 logits kernel. Aux heads and
    ``num_batches_tracked`` are dropped and named. Assumes torchvision's eps 1e-3.
    """
    arrays = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in state_dict.items()}
    if "fc.weight" not in arrays:
        raise _missing(["fc.weight"], path, "torchvision GoogLeNet state_dict")
    num_classes = _source_classes(np.shape(arrays["fc.weight"]), "fc.weight", path, 0)
    out: Dict[str, np.ndarray] = {}
    sources: Dict[str, Tuple[str, ...]] = {}
    dropped: Dict[str, str] = {}
    missing: List[str] = []
    misshapen: List[MappingError] = []

    def get(name: str, shape: Tuple[int, ...], what: str) -> Optional[np.ndarray]:
        # Collect problems: a missing tensor (another network) is reported before a misshapen one.
        if name not in arrays:
            missing.append(name)
            return None
        array = _floating(arrays[name], name, path)
        problem = _shape_problem(array, shape, name, path, what)
        if problem is not None:
            misshapen.append(problem)
            return None
        return array

    for unit in arch.iter_conv_units(arch.RGB_CHANNELS, num_classes):
        module = torchvision_module(unit.path)
        w_name, b_name = f"{unit.path}/{_CONV_W}", f"{unit.path}/{_CONV_B}"
        if not unit.batch_norm:  # the classifier: nn.Linear [out, in]
            w = get(f"{module}.weight", (unit.out_channels, unit.in_channels), w_name)
            b = get(f"{module}.bias", (unit.out_channels,), b_name)
            if w is not None and b is not None:
                out[w_name], sources[w_name] = w.T.reshape(1, 1, unit.in_channels, unit.out_channels), (f"{module}.weight",)
                out[b_name], sources[b_name] = b, (f"{module}.bias",)
            continue
        c = (unit.out_channels,)
        w = get(f"{module}.conv.weight", (unit.out_channels, unit.in_channels) + unit.kernel[1:], w_name)
        gamma = get(f"{module}.bn.weight", c, w_name)
        beta = get(f"{module}.bn.bias", c, f"{unit.path}/{arch.TF_BN_SCOPE}/beta")
        mean = get(f"{module}.bn.running_mean", c, f"{unit.path}/{arch.TF_BN_SCOPE}/moving_mean")
        var = get(f"{module}.bn.running_var", c, f"{unit.path}/{arch.TF_BN_SCOPE}/moving_variance")
        if any(a is None for a in (w, gamma, beta, mean, var)):
            continue
        bn = f"{unit.path}/{arch.TF_BN_SCOPE}/"
        out[w_name] = w.transpose(2, 3, 1, 0) * gamma  # OIHW -> HWIO; gamma scales output channels (last axis)
        sources[w_name] = (f"{module}.conv.weight", f"{module}.bn.weight")
        out[bn + "beta"], sources[bn + "beta"] = beta, (f"{module}.bn.bias",)
        out[bn + "moving_mean"] = mean * gamma
        sources[bn + "moving_mean"] = (f"{module}.bn.running_mean", f"{module}.bn.weight")
        out[bn + "moving_variance"], sources[bn + "moving_variance"] = var, (f"{module}.bn.running_var",)
        counter = f"{module}.bn.num_batches_tracked"
        if counter in arrays:
            dropped[counter] = DROP_COUNTER
    if missing:
        raise _missing(missing, path, "torchvision GoogLeNet state_dict")
    if misshapen:
        raise misshapen[0]
    used = {s for names in sources.values() for s in names}
    for name in arrays:
        if name in used or name in dropped:
            continue
        if name.startswith(TORCHVISION_AUX_HEADS):
            dropped[name] = DROP_AUX
        else:
            raise MappingError(f"unknown key {name!r}: it is not part of torchvision's GoogLeNet", path)
    return Weights2D(out, "torchvision", num_classes, False, sources, dropped, path)


# --------------------------------------------------------------------------- inflation


def inflate_kernel(kernel_2d: np.ndarray, time_size: int, mode: str = "mean") -> np.ndarray:
    """``[kH, kW, Cin, Cout]`` -> ``[kT, kH, kW, Cin, Cout]`` (TF layout).

    ``mean``: every time slice is ``w / kT``, so a constant-in-time input gives
    the 2D response. ``center``: slice ``kT // 2`` is ``w``, the others zero.
    ``kT = 1`` only adds the axis (both modes).
    """
    _check_mode(mode)
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
        raise I3DConvertError(f"--in-channels must be >= 1, got {in_channels}")
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
        raise I3DConvertError(f"--num-classes must be >= 1, got {num_classes}")
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((in_features, num_classes))
    while True:
        outside = np.abs(values) > 2.0
        if not outside.any():
            break
        values[outside] = rng.standard_normal(int(outside.sum()))
    kernel = (values / np.sqrt(in_features)).astype(np.float32).reshape(1, 1, in_features, num_classes)
    return kernel, np.zeros(num_classes, np.float32)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise I3DConvertError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")


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


def inflate_weights(
    weights: Weights2D,
    *,
    mode: str = "mean",
    in_channels: int = arch.RGB_CHANNELS,
    num_classes: Optional[int] = None,
    reinit_logits: bool = False,
    seed: int = 0,
) -> InflatedArrays:
    """Inflate a 2D Inception-v1 into I3D's TF-named arrays.

    Temporal kernel sizes come from :func:`time_kernels` (the architecture table).
    ``num_classes=None`` keeps the ImageNet head with 1000 classes (slim's
    background class 0 dropped). A class count equal to the source's (1001 for
    slim, 1000 for torchvision) carries the head over; any other count, or
    ``reinit_logits``, makes a new head with :func:`new_logits` (``seed``).
    """
    _check_mode(mode)
    source_imagenet = weights.num_classes - (1 if weights.background_class else 0)
    target = source_imagenet if num_classes is None else int(num_classes)
    if target < 1:
        raise I3DConvertError(f"--num-classes must be >= 1, got {target}")
    kernels = time_kernels(in_channels, target)
    logits_path = f"{arch.LOGITS_NAME}/{arch.LOGITS_CONV_NAME}"
    w_name, b_name = f"{logits_path}/{_CONV_W}", f"{logits_path}/{_CONV_B}"
    stem_name = f"{arch.LAYERS[0][0]}/{_CONV_W}"
    out: Dict[str, np.ndarray] = {}
    sources = dict(weights.sources)
    dropped = dict(weights.dropped)
    for name, array in weights.arrays.items():
        if name in (w_name, b_name):
            continue
        if name.endswith(_CONV_W):
            if name == stem_name:
                array = adapt_stem_channels(array, in_channels)
            out[name] = inflate_kernel(array, kernels[name[: -len(_CONV_W) - 1]], mode)
        else:
            out[name] = array
    source_channels = weights.arrays[stem_name].shape[2]
    stem = ("as in the source" if in_channels == source_channels else
            f"{source_channels}->{in_channels} channels: each new channel = sum of the source's "
            f"{source_channels} channels / {in_channels} (grey-equivalent)")
    w, b = weights.arrays[w_name], weights.arrays[b_name]
    if not reinit_logits and target == weights.num_classes:
        logits = f"carried over from the source's {target}-class head"
    elif not reinit_logits and weights.background_class and target == source_imagenet:
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


# --------------------------------------------------------------------------- sources on disk




def read_slim(path: "str | os.PathLike[str]") -> Tuple[Dict[str, np.ndarray], str, List[Path]]:
    """A TF checkpoint (V1 single file such as ``inception_v1.ckpt``, or a V2 bundle) without TensorFlow.

    Returns ``({variable: array}, resolved path, data files)``; the checksums the format has are verified.
    """
    from i3d_convert.io.checkpoint_reader import CheckpointReader

    with CheckpointReader(path) as reader:
        arrays = {}
        for name in reader.keys():
            arrays[name] = np.array(reader.read(name))  # own the memory: the reader closes
        return arrays, str(reader.path), [Path(p) for p in reader.data_paths]


def read_torchvision(path: "str | os.PathLike[str]") -> Dict[str, np.ndarray]:
    """A ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors`` state_dict as numpy arrays."""
    from i3d_convert.conversion.tf_to_torch import load_state_dict_file

    return {k: v.detach().cpu().numpy() for k, v in load_state_dict_file(path).items()}


def detect_source_format(path: "str | os.PathLike[str]") -> str:
    """``torchvision`` for a PyTorch zip/pickle or safetensors file, ``slim`` for anything else (a TF checkpoint)."""
    p = Path(path)
    if p.is_file():
        with open(p, "rb") as f:
            head = f.read(9)
        if head[:2] == b"PK" or head[:1] == b"\x80":
            return "torchvision"
        if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < p.stat().st_size:
            return "torchvision"
        return "slim"
    if p.is_dir() or Path(f"{p}.index").is_file():
        return "slim"
    raise I3DConvertError("file not found", p)


# --------------------------------------------------------------------------- public API


@dataclass
class InflationResult:
    """An inflated state_dict with its provenance."""

    state_dict: "OrderedDict[str, torch.Tensor]"
    metadata: Dict[str, str]
    sources: Dict[str, Tuple[str, ...]]  # state_dict key -> source tensors it was made from
    dropped: Dict[str, str]  # source tensor -> why it is not in the output
    in_channels: int
    num_classes: int
    source_format: str


def _torch_state(arrays: Mapping[str, np.ndarray], in_channels: int, num_classes: int, path: Optional[str]):
    mapped = tf_to_torch_arrays(arrays, path=path, expected_in_channels=in_channels, expected_num_classes=num_classes)
    order = {rule.torch_key: i for i, rule in enumerate(mapping_table(in_channels, num_classes).values())}
    state = OrderedDict(
        (key, torch.from_numpy(np.array(mapped.arrays[key], order="C", copy=True)))
        for key in sorted(mapped.arrays, key=lambda k: order[k])
    )
    return state, mapped.sources


def inflate_source(
    weights: Weights2D,
    *,
    mode: str = "mean",
    in_channels: int = arch.RGB_CHANNELS,
    num_classes: Optional[int] = None,
    reinit_logits: bool = False,
    seed: int = 0,
) -> InflationResult:
    """:class:`Weights2D` -> an :class:`~i3d_convert.models.i3d.InceptionI3d` state_dict (strict) with provenance."""
    inflated = inflate_weights(weights, mode=mode, in_channels=in_channels, num_classes=num_classes,
                               reinit_logits=reinit_logits, seed=seed)
    state, tf_names = _torch_state(inflated.arrays, inflated.in_channels, inflated.num_classes, weights.path)
    sources = {key: inflated.sources.get(tf_name, ()) for key, tf_name in tf_names.items()}
    metadata = {
        "producer": f"i3d-inflate (i3d-convert {__version__})",
        "architecture": "InceptionI3d",
        "source_format": weights.source_format,
        "source_checkpoint": weights.path or "",
        "mode": mode,
        "in_channels": str(inflated.in_channels),
        "num_classes": str(inflated.num_classes),
        "bn_eps": repr(arch.BN_EPS),
        "time_kernels": json.dumps(time_kernels(inflated.in_channels, inflated.num_classes)),
        "stem": inflated.stem,
        "logits": inflated.logits,
        "dropped": json.dumps(inflated.dropped),
        "layout": "native",
    }
    if weights.source_format == "torchvision":
        metadata["bn_scale"] = "folded into conv kernels and moving means (gamma*w, gamma*m)"
    return InflationResult(state, metadata, sources, inflated.dropped, inflated.in_channels,
                           inflated.num_classes, weights.source_format)


def inflate(
    source: "str | os.PathLike[str]",
    *,
    source_format: Optional[str] = None,
    mode: str = "mean",
    in_channels: int = arch.RGB_CHANNELS,
    num_classes: Optional[int] = None,
    reinit_logits: bool = False,
    seed: int = 0,
    time_kernel: Optional[int] = None,
) -> InflationResult:
    """Inflate a 2D ImageNet checkpoint file into 3D weights.

    ``source_format``: ``slim``, ``torchvision``, ``timm:NAME`` or ``None``
    (a PyTorch/safetensors file is torchvision, anything else slim). For slim and
    torchvision the result is an :class:`~i3d_convert.models.i3d.InceptionI3d`
    state_dict (``InceptionI3d(result.num_classes, result.in_channels)`` loads it
    with ``strict=True``). For ``timm:NAME`` the file holds the timm model's 2D
    state_dict and the result is the state_dict of
    ``inflate_module(timm.create_model(NAME, pretrained=False, num_classes=...), time_kernels=time_kernel)``
    (``time_kernel`` defaults to 3; Inception-v1's temporal kernels come from the
    architecture table, so it is refused for the other sources).
    All user errors raise :class:`I3DConvertError` naming the file.
    """
    _check_mode(mode)
    fmt = detect_source_format(source) if source_format is None else source_format
    if fmt.startswith(TIMM_PREFIX):
        return inflate_timm(fmt[len(TIMM_PREFIX):], source, mode=mode, in_channels=in_channels,
                            num_classes=num_classes, reinit_logits=reinit_logits, seed=seed,
                            time_kernel=3 if time_kernel is None else time_kernel)
    if time_kernel is not None:
        raise I3DConvertError("--time-kernel is for timm sources; Inception-v1's temporal kernels come from "
                              "the architecture table (stem 7, 3x3 convs 3, 1x1 convs 1)")
    if fmt == "slim":
        arrays, resolved, data_files = read_slim(source)
        weights = slim_to_2d(arrays, resolved)
    elif fmt == "torchvision":
        if not Path(source).is_file():
            raise I3DConvertError("file not found" if not Path(source).exists() else "not a file", source)
        weights = torchvision_to_2d(read_torchvision(source), str(source))
        data_files = [Path(source)]
    else:
        raise I3DConvertError(f"unknown source format {fmt!r}; use one of {', '.join(SOURCE_FORMATS)}")
    result = inflate_source(weights, mode=mode, in_channels=in_channels, num_classes=num_classes,
                            reinit_logits=reinit_logits, seed=seed)
    result.metadata["source_sha256"] = sha256_of_files(data_files)
    return result


def inflate_to_file(
    source: "str | os.PathLike[str]",
    output: "str | os.PathLike[str]",
    *,
    fmt: Optional[str] = None,
    overwrite: bool = False,
    **options,
) -> InflationResult:
    """:func:`inflate` and write the state_dict atomically (``.safetensors`` or ``.pt``); nothing is written on any error."""
    from i3d_convert.io.atomic import check_output_path
    from i3d_convert.conversion.tf_to_torch import output_format, save_state_dict

    output_format(output, fmt)
    check_output_path(output, overwrite)
    result = inflate(source, **options)
    save_state_dict(result.state_dict, output, result.metadata, fmt=fmt, overwrite=overwrite)
    return result


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
    _check_mode(mode)
    plan = temporal_plan(model_2d, time_kernels, time_strides)
    allowed = tuple(PASSTHROUGH) + tuple(passthrough)
    # Copy everything except the layers about to be replaced (they are shared with model_2d
    # until replaced in the copy, and only read), so their 2D weights are not copied for nothing.
    memo = {id(m): m for m in model_2d.modules() if type(m) in _INFLATABLE}
    model = copy.deepcopy(model_2d, memo)
    replacements: List[Tuple[nn.Module, str, nn.Module]] = []
    inflated: Dict[int, nn.Module] = {}  # a layer used in two places stays one (shared) layer
    for name, module in model.named_modules(remove_duplicate=False):
        kind = type(module)
        if id(module) in inflated:
            parent_name, _, attr = name.rpartition(".")
            replacements.append((model.get_submodule(parent_name), attr, inflated[id(module)]))
            continue
        children = dict(module.named_children())
        if kind is nn.Conv2d:
            new: Optional[nn.Module] = _inflate_conv(module, *plan[name], mode)
        elif kind is nn.BatchNorm2d:
            new = _inflate_bn(module)
        elif kind in _POOLS:
            new = _inflate_pool(module, *plan[name])
        elif kind is nn.AdaptiveAvgPool2d:
            new = nn.AdaptiveAvgPool3d(_adaptive_size(module.output_size))
        elif kind is nn.AdaptiveMaxPool2d:
            new = nn.AdaptiveMaxPool3d(_adaptive_size(module.output_size), module.return_indices)
        elif kind is nn.Dropout2d:
            new = nn.Dropout3d(module.p, module.inplace)
        elif isinstance(module, allowed) and not isinstance(module, _INFLATABLE):
            continue
        elif isinstance(module, _INFLATABLE) or not children:
            raise I3DConvertError(
                f"cannot inflate module {name or '<root>'!r} of type {kind.__module__}.{kind.__qualname__}: "
                "only plain Conv2d/BatchNorm2d/pooling layers and shape-agnostic layers are supported"
            )
        elif module._parameters or module._buffers:
            raise I3DConvertError(
                f"cannot inflate module {name or '<root>'!r} of type {kind.__module__}.{kind.__qualname__}: it holds its own "
                f"tensors ({', '.join(list(module._parameters) + list(module._buffers))}) whose use may assume 2D"
            )
        else:
            continue
        inflated[id(module)] = new
        parent_name, _, attr = name.rpartition(".")
        replacements.append((model.get_submodule(parent_name), attr, new))
    for parent, attr, new in replacements:
        setattr(parent, attr, new)
    return model


def inflate_timm(
    name: str,
    weights: "str | os.PathLike[str] | None" = None,
    *,
    mode: str = "mean",
    in_channels: int = arch.RGB_CHANNELS,
    num_classes: Optional[int] = None,
    reinit_logits: bool = False,
    seed: int = 0,
    time_kernel: TimeKernels = 3,
) -> InflationResult:
    """``timm.create_model(name, pretrained=False)`` (no network), load ``weights`` strictly, inflate with :func:`inflate_module`.

    ``weights`` is the model's 2D state_dict file (``.pth`` with
    ``weights_only=True``, or ``.safetensors``); ``None`` inflates timm's own
    random initialisation. ``num_classes`` different from the file's (or
    ``reinit_logits``) resets the classifier with timm's ``reset_classifier``
    under ``torch.manual_seed(seed)``.
    """
    try:
        import timm
    except ImportError:
        raise I3DConvertError("timm sources need timm: pip install 'i3d-convert[timm]'") from None
    if in_channels != arch.RGB_CHANNELS:
        raise I3DConvertError("--in-channels other than 3 is supported for the Inception-v1 sources only")
    if not name or not timm.is_model(name):
        raise I3DConvertError(f"unknown timm model {name!r}")
    path = None if weights is None else str(weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False)
        if weights is not None:
            state = {k: v for k, v in _load_file(weights).items()}
            try:
                result = model.load_state_dict(state, strict=False)
            except RuntimeError as exc:  # shape mismatches
                detail = " ".join(str(exc).split("\n")[1:2]).strip() or str(exc).splitlines()[0]
                raise MappingError(f"not a state_dict of timm model {name!r}: {detail}", path) from None
            if result.missing_keys or result.unexpected_keys:
                problem = (f"missing key {result.missing_keys[0]!r}" if result.missing_keys
                           else f"unexpected key {result.unexpected_keys[0]!r}")
                raise MappingError(f"not a state_dict of timm model {name!r}: {problem}", path)
        head_classes = getattr(model, "num_classes", None)
        logits = "carried over from the source"
        if reinit_logits or (num_classes is not None and num_classes != head_classes):
            target = head_classes if num_classes is None else num_classes
            model.reset_classifier(target)
            logits = f"re-initialised for {target} classes by timm reset_classifier under torch.manual_seed({seed})"
    model.eval()
    plan = temporal_plan(model, time_kernel)
    model_3d = inflate_module(model, time_kernel, mode=mode)
    state = OrderedDict((k, v.detach()) for k, v in model_3d.state_dict().items())
    metadata = {
        "producer": f"i3d-inflate (i3d-convert {__version__})",
        "architecture": f"timm:{name} (timm {timm.__version__}) inflated by i3d_convert.inflation.inflate.inflate_module",
        "rebuild": f"inflate_module(timm.create_model({name!r}, pretrained=False, num_classes={getattr(model, 'num_classes', '?')}), "
                   f"time_kernels={time_kernel!r}, mode={mode!r})",
        "source_format": f"timm:{name}",
        "source_checkpoint": path or "",
        "source_sha256": sha256_of_files([Path(weights)]) if weights is not None else "",
        "mode": mode,
        "time_kernels": json.dumps({n: k for n, (k, _) in plan.items()}),
        "logits": logits,
        "layout": "timm",
    }
    return InflationResult(state, metadata, {k: (k,) for k in state}, {}, arch.RGB_CHANNELS,
                           int(getattr(model, "num_classes", 0) or 0), f"timm:{name}")


def _load_file(path: "str | os.PathLike[str]") -> Dict[str, torch.Tensor]:
    from i3d_convert.conversion.tf_to_torch import load_state_dict_file

    return dict(load_state_dict_file(path))
