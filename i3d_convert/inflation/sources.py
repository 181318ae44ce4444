"""Reading 2D Inception-v1 sources into :class:`Weights2D` (I3D's names, 2D kernels, batch-norm scale folded).

Sources:

* ``slim``: TF-slim's ``inception_v1.ckpt`` (``InceptionV1/...``, 1001 classes
  with "background" at 0, batch norm without scale), TF V1 single-file format
  or a V2 bundle, read without TensorFlow by :mod:`i3d_convert.io.checkpoint_reader`.
* ``torchvision``: ``googlenet`` state_dict (``.pth`` read with
  ``weights_only=True``, or ``.safetensors``); batch-norm scales are folded
  exactly into the conv kernel and moving mean; aux heads are dropped.

(``timm:NAME`` sources are whole 2D modules, inflated by :mod:`i3d_convert.inflation.modules`.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from i3d_convert import architecture as arch
from i3d_convert.errors import I3DConvertError, MappingError
from i3d_convert.names.slim import SLIM_SCOPE, slim_name
from i3d_convert.names.tf1 import skip_reason

#: ``source_format`` values; ``timm:NAME`` names a timm model.
SOURCE_FORMATS: Tuple[str, ...] = ("slim", "torchvision", "timm:NAME")
TIMM_PREFIX = "timm:"

#: ImageNet classes without slim's extra "background" class (index 0).
IMAGENET_CLASSES = 1000

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

CONV_W = f"{arch.TF_CONV_SCOPE}/w"
CONV_B = f"{arch.TF_CONV_SCOPE}/b"
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
        rules = [(f"{scope}/weights", f"{unit.path}/{CONV_W}", unit.kernel[1:] + (unit.in_channels, unit.out_channels))]
        if unit.bias:
            rules.append((f"{scope}/biases", f"{unit.path}/{CONV_B}", (unit.out_channels,)))
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
        w_name, b_name = f"{unit.path}/{CONV_W}", f"{unit.path}/{CONV_B}"
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
    from i3d_convert.conversion.sources import load_state_dict_file

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


