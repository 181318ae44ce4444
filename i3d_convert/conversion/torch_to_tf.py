"""torch-to-tf: a PyTorch state_dict -> a TF1 name-based checkpoint with DeepMind's names.

The inverse of tf-to-torch, through the same table
(:func:`i3d_convert.conversion.tf_layout.torch_to_tf_arrays`): conv kernels go back to
``[kT, kH, kW, in, out]``, batch-norm vectors to ``[C]`` (or ``[1,1,1,1,C]``,
the kin600 layout), names get the scope (``RGB/inception_i3d/`` by default).
The files are written by the package's own TensorBundle writer
(:func:`i3d_convert.io.bundle_writer.write_checkpoint`; no TensorFlow needed,
crc32c filled in), so ``tf.train.load_checkpoint(prefix)``, a TF1
``tf.train.Saver`` built by DeepMind's ``i3d.py``, or tf-to-torch read them.
tf -> torch -> tf reproduces the original tensors bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Tuple, Union

import numpy as np
import torch

from i3d_convert import architecture as arch
from i3d_convert.io.atomic import check_output_path, created_folder
from i3d_convert.conversion.sources import check_finite
from i3d_convert.errors import I3DConvertError, MappingError, PathLike
from i3d_convert.conversion.layouts import from_layout
from i3d_convert.conversion.tf_layout import torch_to_tf_arrays
from i3d_convert.names.tf1 import FLOW_SCOPE, KNOWN_SCOPES, RGB_SCOPE, infer_channels
from i3d_convert.io.bundle_format import data_path_for, index_path_for
from i3d_convert.io.bundle_writer import write_checkpoint

StateDictLike = Union[Mapping[str, "torch.Tensor | np.ndarray"], PathLike]

#: CLI names of the scopes DeepMind's checkpoints use.
SCOPES: Dict[str, str] = {"rgb": RGB_SCOPE, "flow": FLOW_SCOPE, "none": ""}
#: The input channels each stream's scope implies.
_SCOPE_CHANNELS = {RGB_SCOPE: arch.RGB_CHANNELS, FLOW_SCOPE: arch.FLOW_CHANNELS}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_to_tf` wrote."""

    prefix: Path
    files: Tuple[Path, Path]  # (.index, .data-00000-of-00001)
    scope: str
    in_channels: int
    num_classes: int
    num_tensors: int


def output_files(prefix: PathLike) -> Tuple[Path, Path]:
    """The ``.index`` and the single ``.data-00000-of-00001`` file of a checkpoint prefix."""
    text = os.fspath(prefix)
    return Path(index_path_for(text)), Path(data_path_for(text, 0, 1))


def _as_numpy(value: "torch.Tensor | np.ndarray", key: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    raise MappingError(f"state_dict value {key!r} is a {type(value).__name__}, not a tensor")


def _load_state_dict(source: StateDictLike, layout: str, allow_non_finite: bool) -> Tuple[Dict[str, np.ndarray], str]:
    if isinstance(source, (str, os.PathLike)):  # any weights file, through the package's one loader
        from i3d_convert.conversion.weights import load_weights

        return ({key: _as_numpy(value, key) for key, value in
                 load_weights(source, allow_non_finite=allow_non_finite).state_dict.items()}, os.fspath(source))
    state = source
    if layout != "native":
        tensors = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v)) for k, v in state.items()}
        state = from_layout(tensors, layout)
    arrays = {key: _as_numpy(value, key) for key, value in state.items()}
    check_finite({k: torch.from_numpy(np.asarray(a)) for k, a in arrays.items() if a.dtype.kind == "f"},
                 allow_non_finite=allow_non_finite)
    return arrays, "state_dict"


def export_to_tf(
    state_dict: StateDictLike,
    prefix: PathLike,
    *,
    scope: str = SCOPES["rgb"],
    bn_shape_5d: bool = False,
    overwrite: bool = False,
    layout: str = "native",
    dtype: str = "float32",
    allow_non_finite: bool = False,
) -> ExportResult:
    """Write ``state_dict`` (a mapping, or any weights file
    :func:`~i3d_convert.conversion.weights.load_weights` reads) as a TF1 checkpoint at ``prefix``.

    ``prefix`` is ``DIR/model.ckpt``; ``DIR/model.ckpt.index`` and
    ``DIR/model.ckpt.data-00000-of-00001`` are written (atomically, data
    first), and neither may exist unless ``overwrite`` (nor be the input file). ``DIR`` is created if
    missing, as TensorFlow's saver does (and removed again if the export fails). ``scope`` is put in
    front of every name (``"RGB/inception_i3d/"``, ``"Flow/inception_i3d/"``
    or ``""``); the RGB/Flow scopes require 3/2 input channels. ``layout`` of
    a mapping (a file's is recognised): ``native`` (:class:`InceptionI3d` keys)
    or ``piergiaj`` (a non-trivial batch-norm scale is folded exactly into the
    conv, since DeepMind's graph has none). NaN/inf weights are an error
    unless ``allow_non_finite`` (then a warning). ``dtype="float32"`` (DeepMind's dtype; exact for float16/
    bfloat16 sources, rounds float64) or ``"keep"``.
    """
    if scope and not scope.endswith("/"):
        raise I3DConvertError(f"{{arg}} must be empty or end with '/', got {scope!r}", argument="scope")
    if dtype not in ("float32", "keep"):
        raise I3DConvertError(f"{{arg}} must be 'float32' or 'keep', got {dtype!r}", argument="dtype")
    index_file, data_file = output_files(prefix)
    inputs = [state_dict] if isinstance(state_dict, (str, os.PathLike)) else []
    with created_folder(index_file.parent):
        for path in (index_file, data_file):
            check_output_path(path, overwrite, inputs=inputs)
        return _export_arrays(state_dict, prefix, scope, bn_shape_5d, layout, dtype, allow_non_finite)


def _export_arrays(state_dict: StateDictLike, prefix: PathLike, scope: str, bn_shape_5d: bool, layout: str,
                   dtype: str, allow_non_finite: bool) -> ExportResult:
    """:func:`export_to_tf` once its arguments and output paths are checked."""
    index_file, data_file = output_files(prefix)
    arrays, where = _load_state_dict(state_dict, layout, allow_non_finite)
    tf_arrays = torch_to_tf_arrays(arrays, scope=scope, bn_shape_5d=bn_shape_5d, path=where)
    in_channels, num_classes = infer_channels(tf_arrays, scope, where)
    expected = _SCOPE_CHANNELS.get(scope)
    if expected is not None and expected != in_channels:
        raise MappingError(f"scope {scope!r} is for {expected}-channel input but the model has {in_channels}", where)
    for name, array in tf_arrays.items():
        if array.dtype.kind != "f":
            raise MappingError(f"{name!r} has dtype {array.dtype}, expected floating point", where)
    if dtype == "float32":
        tf_arrays = {name: array.astype(np.float32, copy=False) for name, array in tf_arrays.items()}
    write_checkpoint(prefix, tf_arrays)
    return ExportResult(Path(os.fspath(prefix)), (index_file, data_file), scope, in_channels, num_classes, len(tf_arrays))


__all__ = ["ExportResult", "SCOPES", "KNOWN_SCOPES", "export_to_tf", "output_files"]
