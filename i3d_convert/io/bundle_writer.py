"""Write TensorFlow V2 checkpoints (TensorBundles) without TensorFlow.

:func:`write_checkpoint` writes a one-shard bundle byte-identical to
``tf.raw_ops.SaveV2`` with names in sorted order, atomically (temporaries
renamed into place; nothing half-written is left on failure).
"""

from __future__ import annotations

import os
import secrets
from typing import List, Mapping, Optional, Tuple

import numpy as np

from i3d_convert.io import protowire as wire
from i3d_convert.errors import I3DConvertError
from i3d_convert.io.bundle_format import (
    BUNDLE_VERSION,
    DTYPES,
    OBJECT_DTYPE,
    PathLike,
    data_path_for,
    index_path_for,
    masked_crc32c,
)

def _tf_dtype_number(dtype: np.dtype) -> Optional[int]:
    """TensorFlow's ``DataType`` number for a numpy dtype, or None when TensorFlow has none."""
    if dtype.name == "bfloat16":
        return 14
    for number, known in DTYPES.items():
        if known.numpy is not None and known.numpy != OBJECT_DTYPE and known.name != "bfloat16":
            if dtype.kind == known.numpy.kind and dtype.itemsize == known.numpy.itemsize:
                return number
    return None


def entry_proto(dtype: int, shape: Tuple[int, ...], offset: int, size: int, crc: int) -> bytes:
    """A ``BundleEntryProto`` as ``SaveV2`` encodes it (zero offset, size and crc are left out)."""
    shape_proto = b"".join(wire.field_bytes(2, wire.field_varint(1, d) if d else b"") for d in shape)
    out = wire.field_varint(1, dtype) + wire.field_bytes(2, shape_proto)
    if offset:
        out += wire.field_varint(4, offset)
    if size:
        out += wire.field_varint(5, size)
    if crc:
        out += wire.field_fixed32(6, crc)
    return out


def _create_temporary(prefix: str, kind: str, temps: List[str]) -> Tuple[int, str]:
    """A new file beside ``prefix`` (mode 0666 & ~umask, like the final files), recorded in ``temps``."""
    directory, base = os.path.split(prefix)
    while True:
        name = os.path.join(directory, f".{base}.{kind}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        temps.append(name)
        return fd, name


def _prepared_tensors(arrays: Mapping[str, np.ndarray], prefix: str) -> List[Tuple[bytes, int, np.ndarray]]:
    """``(utf-8 name, TF dtype number, little-endian C-order array)`` per tensor, sorted by name."""
    tensors: List[Tuple[bytes, int, np.ndarray]] = []
    for name, value in arrays.items():
        if not isinstance(name, str) or not name or name[0] == "\x00":
            raise I3DConvertError(f"invalid tensor name {name!r} (must be a non-empty string)", prefix)
        try:
            key = name.encode("utf-8")
        except UnicodeEncodeError:
            raise I3DConvertError(f"tensor name {name!r} is not valid Unicode", prefix) from None
        array = np.asarray(value)
        number = _tf_dtype_number(array.dtype)
        if number is None:
            raise I3DConvertError(f"tensor {name!r} has unsupported dtype {array.dtype}", prefix)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        if not array.flags.c_contiguous:
            array = array.copy(order="C")  # not np.ascontiguousarray: it turns scalars into shape (1,)
        tensors.append((key, number, array))
    tensors.sort(key=lambda t: t[0])
    return tensors


def _write_data(fd: int, tensors: List[Tuple[bytes, int, np.ndarray]]) -> List[Tuple[bytes, bytes]]:
    """Write the tensors back to back to ``fd`` (synced); the index items: header, then one entry each."""
    items = [(b"", wire.field_varint(1, 1) + wire.field_bytes(3, wire.field_varint(1, BUNDLE_VERSION)))]
    offset = 0
    with os.fdopen(fd, "wb") as f:
        for key, number, array in tensors:
            raw = array.reshape(-1).view(np.uint8)
            f.write(raw.data)
            items.append((key, entry_proto(number, array.shape, offset, raw.size, masked_crc32c(raw))))
            offset += raw.size
        f.flush()
        os.fsync(f.fileno())
    return items


def write_checkpoint(prefix: PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as a one-shard TensorBundle at ``prefix`` (``.index`` + ``.data-00000-of-00001``).

    The files match ``tf.raw_ops.SaveV2`` byte for byte: tensors back to back
    in sorted-name order, TensorFlow's table layout. Both files are written to
    temporaries in the target directory and renamed into place at the end
    (data first, index last); on any failure, including KeyboardInterrupt,
    the temporaries are removed. Raises :class:`I3DConvertError` for a bad
    name, an unsupported dtype or an unwritable path.
    """
    prefix_text = os.fspath(prefix)
    tensors = _prepared_tensors(arrays, prefix_text)
    temps: List[str] = []
    try:
        fd, data_tmp = _create_temporary(prefix_text, "data", temps)
        items = _write_data(fd, tensors)
        fd, index_tmp = _create_temporary(prefix_text, "index", temps)
        with os.fdopen(fd, "wb") as f:
            f.write(wire.encode_table(items))
            f.flush()
            os.fsync(f.fileno())
        os.replace(data_tmp, data_path_for(prefix_text, 0, 1))
        temps.remove(data_tmp)
        os.replace(index_tmp, index_path_for(prefix_text))
        temps.remove(index_tmp)
    except OSError as exc:
        raise I3DConvertError(f"cannot write checkpoint: {exc.strerror or exc}", prefix_text) from None
    finally:
        for temp in temps:
            try:
                os.unlink(temp)
            except OSError:
                pass


__all__ = ["entry_proto", "write_checkpoint"]
