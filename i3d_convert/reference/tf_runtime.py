"""TensorFlow for the reference layer, imported safely: every TF user in the package imports ``tf`` from here.

Importing this module imports TensorFlow; ``import i3d_convert`` does not.
It also works around a crash of this environment (TF 2.21 with torch 2.14 /
torchvision 0.29): once TensorFlow is loaded, loading Triton's native
library -- which ``import torchvision`` and ``import timm`` do through
``torch._dynamo`` -- segfaults. Loading it first is safe, so this module
imports ``torchvision`` (or, without torchvision, ``triton``) *before*
TensorFlow when they are installed (:mod:`i3d_convert._import_order`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from i3d_convert._import_order import preload_native_libraries, tensorflow_loaded_too_early


def _preload_torch_natives() -> None:
    """Load torchvision / Triton native code before TensorFlow (see :mod:`i3d_convert._import_order`)."""
    if tensorflow_loaded_too_early():
        # Too late to reorder; importing Triton now would itself crash.
        warnings.warn(
            "tensorflow was imported before i3d_convert.reference and before "
            "torchvision/triton; in this environment importing torchvision, timm "
            "or triton now can crash the process (SIGSEGV). Import "
            "i3d_convert (or torchvision) before tensorflow.",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    preload_native_libraries(("torchvision", "triton"))


_preload_torch_natives()

import tensorflow as tf  # noqa: E402  (must come after the preload)


def _enable_gpu_memory_growth() -> None:
    """Stop TensorFlow from reserving all GPU memory (torch shares the GPU in tests)."""
    try:
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except (RuntimeError, ValueError):  # already initialised: leave it as it is
        pass


_enable_gpu_memory_growth()


def tf_dtype(dtype: Any) -> tf.DType:
    """``tf.float32`` or ``tf.float64`` for a name, numpy or TF dtype; ``ValueError`` for anything else."""
    try:
        name = dtype.name if isinstance(dtype, tf.DType) else np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
    return tf.as_dtype(name)


__all__ = ["tf", "tf_dtype"]
