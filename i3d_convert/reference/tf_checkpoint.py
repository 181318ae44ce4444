"""TensorFlow checkpoints read and written by TensorFlow itself: the reference side of every checkpoint check.

The package's own TF-free reader (:mod:`i3d_convert.io.checkpoint_reader`)
is checked against :func:`read_checkpoint_with_tensorflow`, so nothing here
uses it. :func:`reference_variables` is ``verify``'s TensorFlow side: TF1 checkpoints through
``tf.train.load_checkpoint``, TF2 object-based checkpoints of the Sonnet 2 port restored into
:class:`i3d_convert.reference.sonnet.SonnetI3D` and read back from its modules.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from i3d_convert.errors import CheckpointFormatError, I3DConvertError, MappingError, PathLike
from i3d_convert.reference.tf_runtime import tf



def _tf_path(path: PathLike) -> str:
    """What TensorFlow's readers accept: a prefix or a folder (a trailing ``.index`` is dropped)."""
    text = os.fspath(path)
    return text[: -len(".index")] if text.endswith(".index") else text


def read_checkpoint_with_tensorflow(path: PathLike) -> Dict[str, np.ndarray]:
    """Every tensor of a TF checkpoint as ``tf.train.load_checkpoint(path).get_tensor`` returns it.

    ``path``: a checkpoint prefix (V2 or V1), its ``.index`` file, or a folder
    with a ``checkpoint`` state file (TensorFlow resolves it). Returns
    ``{name: np.ndarray}`` for every name TensorFlow lists, TF2 bookkeeping
    included (strings come back as numpy ``bytes`` arrays). Anything
    TensorFlow cannot read raises :class:`CheckpointFormatError` naming ``path``.
    """
    prefix = _tf_path(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {name: np.asarray(reader.get_tensor(name)) for name in sorted(reader.get_variable_to_shape_map())}
    except (tf.errors.OpError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise CheckpointFormatError(f"TensorFlow cannot read the checkpoint: {message.splitlines()[0]}", prefix) from None


def save_tf2_checkpoint(module: Any, prefix: str) -> str:
    """``tf.train.Checkpoint(model=module).write(prefix)``: a TF2 object-based
    checkpoint like the PR #127 port's (names ``model/<attr path>/.ATTRIBUTES/VARIABLE_VALUE``).
    Returns the written prefix."""
    return tf.train.Checkpoint(model=module).write(prefix)


def tf2_checkpoint_shapes(path: str) -> Dict[str, Tuple[int, ...]]:
    """Name -> shape of every tensor in a TF checkpoint (``tf.train.list_variables``)."""
    return {name: tuple(shape) for name, shape in tf.train.list_variables(path)}


_TF2_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_TF2_STEM = "Conv3d_1a_7x7/conv3d/w" + _TF2_SUFFIX
#: TensorFlow device names :func:`resolve_tf_device` accepts.
TF_DEVICES = ("cpu", "gpu")


def _checkpoint_shapes(prefix: str) -> Dict[str, Tuple[int, ...]]:
    try:
        return {name: tuple(shape) for name, shape in tf.train.list_variables(prefix)}
    except (tf.errors.OpError, ValueError) as exc:
        raise I3DConvertError(f"TensorFlow cannot read this checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})", prefix) from None


def _resolve_prefix(checkpoint: PathLike) -> str:
    """A checkpoint prefix for TensorFlow from a prefix, an ``.index`` file or a folder."""
    from i3d_convert.io.checkpoint_reader import CheckpointReader

    with CheckpointReader(checkpoint, verify_crc=False) as reader:
        return str(reader.path)


def reference_variables(checkpoint: PathLike) -> Tuple[Dict[str, np.ndarray], str]:
    """TF1-named variables of a checkpoint as TensorFlow reads them, and the checkpoint kind (``tf1``/``tf2-object``).

    ``checkpoint``: a prefix, an ``.index`` file or a folder. Bad files raise
    :class:`I3DConvertError` naming the checkpoint.
    """
    prefix = _resolve_prefix(checkpoint)
    shapes = _checkpoint_shapes(prefix)
    roots = sorted({n[: -len(_TF2_STEM)] for n in shapes if n.endswith(_TF2_STEM)})
    if not roots:
        reader = tf.train.load_checkpoint(prefix)
        return {name: reader.get_tensor(name) for name in shapes}, "tf1"
    return _restore_tf2_object(prefix, shapes, roots), "tf2-object"


def _restore_tf2_object(prefix: str, shapes: Dict[str, Tuple[int, ...]], roots: List[str]) -> Dict[str, np.ndarray]:
    """Restore a TF2 object-based checkpoint into the Sonnet 2 I3D and read its variables back in TF1 names."""
    from i3d_convert.reference.sonnet import SonnetI3D

    if len(roots) != 1 or roots[0].count("/") != 1:
        raise MappingError(f"TF2 checkpoint: expected one root object holding the I3D network, found {roots}", prefix)
    root = roots[0][:-1]
    bias = shapes.get(f"{root}/Logits/logits/conv3d/b{_TF2_SUFFIX}")
    if bias is None:
        raise MappingError(f"TF2 checkpoint has no {root}/Logits/logits/conv3d/b", prefix)
    module = SonnetI3D(num_classes=int(bias[0]))
    module.build(int(shapes[roots[0] + _TF2_STEM][3]), "float32")
    try:
        tf.train.Checkpoint(**{root: module}).read(prefix).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        raise MappingError(f"TF2 checkpoint does not restore into the Sonnet 2 I3D ({exc})", prefix) from None
    out: Dict[str, np.ndarray] = {}
    for path, unit in module.tf1_units():
        out[f"{path}/conv_3d/w"] = unit.conv3d.w.numpy()
        if unit.conv3d.with_bias:
            out[f"{path}/conv_3d/b"] = unit.conv3d.b.numpy()
        if unit.use_batch_norm:
            bn = unit.batch_norm
            if not np.all(bn.scale.numpy() == 1):
                raise MappingError(f"{path}: batch-norm scale is not all ones; DeepMind's I3D has none", prefix)
            out[f"{path}/batch_norm/beta"] = bn.offset.numpy()
            out[f"{path}/batch_norm/moving_mean"] = bn.moving_mean.average.numpy()
            out[f"{path}/batch_norm/moving_variance"] = bn.moving_variance.average.numpy()
    return out


def resolve_tf_device(torch_on_cuda: bool, tf_device: Optional[str]) -> Tuple[str, Optional[str]]:
    """TensorFlow's device (``cpu``/``gpu``) and a note when it differs from PyTorch's.

    ``tf_device`` None: ``gpu`` when PyTorch runs on CUDA and TensorFlow sees a
    GPU, else ``cpu``. An unknown name, or ``gpu`` without one, raises :class:`I3DConvertError`.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if tf_device is None:
        note = ("TensorFlow sees no GPU: PyTorch ran on the GPU, TensorFlow on the CPU"
                if torch_on_cuda and not gpus else None)
        return ("gpu" if torch_on_cuda and gpus else "cpu"), note
    if tf_device not in TF_DEVICES:
        raise I3DConvertError(f"unknown TensorFlow device {tf_device!r}; use cpu or gpu")
    if tf_device == "gpu" and not gpus:
        raise I3DConvertError("TensorFlow device gpu requested but TensorFlow sees no GPU")
    return tf_device, None


def tf_gpu_name() -> str:
    """The name TensorFlow gives its first GPU (``GPU:0`` when it reports none)."""
    details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
    return details.get("device_name", "GPU:0")


__all__ = ["read_checkpoint_with_tensorflow", "save_tf2_checkpoint", "tf2_checkpoint_shapes", "TF_DEVICES",
           "reference_variables", "resolve_tf_device", "tf_gpu_name"]
