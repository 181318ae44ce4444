"""TensorFlow checkpoints read and written by TensorFlow itself: the reference side of every checkpoint check.

The package's own TF-free reader (:mod:`i3d_convert.io.checkpoint_reader`)
is checked against :func:`read_checkpoint_with_tensorflow`, so nothing here
uses it.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple, Union

import numpy as np

from i3d_convert.errors import CheckpointFormatError
from i3d_convert.reference.tf_runtime import tf

PathLike = Union[str, "os.PathLike[str]"]


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


__all__ = ["read_checkpoint_with_tensorflow", "save_tf2_checkpoint", "tf2_checkpoint_shapes"]
