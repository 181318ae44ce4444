"""What TensorFlow's checkpoint formats share: dtypes, tensor entries, protobuf pieces, files.

The base of the TF-free checkpoint readers (:mod:`i3d_convert.io.bundle_v2`
for V2 TensorBundles, :mod:`i3d_convert.io.tf_v1_checkpoint` for V1 files)
and of the writer (:mod:`i3d_convert.io.bundle_writer`); imports neither.

Every file is untrusted input: anything malformed raises
:class:`~i3d_convert.errors.CheckpointFormatError` (crc mismatches its
subclass :class:`~i3d_convert.errors.ChecksumError`) naming the file.

Dtypes: the numeric TensorFlow dtypes map to numpy dtypes (little-endian).
``bfloat16`` tensors come back as ``ml_dtypes.bfloat16`` when the
``ml_dtypes`` package is importable (it ships with TensorFlow and JAX) and as
their raw ``uint16`` bit patterns otherwise; ``TensorEntry.dtype_name`` says
``"bfloat16"`` either way. ``string`` tensors read as object arrays of
``bytes``. Other dtypes (quantized, float8, resource, variant, ...) are listed
but not readable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import mmap
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from i3d_convert.io import protowire as wire
from i3d_convert.errors import CheckpointFormatError, PathLike


#: ``BundleHeaderProto.version.producer`` TensorFlow writes (``kTensorBundleVersion``).
BUNDLE_VERSION = 1
#: TensorFlow's ``TensorShape::MaxDimensions()``.
MAX_RANK = 254
#: More shards than this is treated as a corrupt header rather than a checkpoint.
MAX_SHARDS = 99999

try:  # optional: a real numpy dtype for bfloat16
    import ml_dtypes as _ml_dtypes

    _BFLOAT16: np.dtype = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    _BFLOAT16 = np.dtype("<u2")

#: The numpy dtype of entries numpy cannot hold (and of string tensors).
OBJECT_DTYPE = np.dtype(object)


@dataclass(frozen=True)
class DType:
    """One TensorFlow ``DataType``: its name, numpy dtype (None: not readable) and bytes per element."""

    name: str
    numpy: Optional[np.dtype]
    itemsize: int  # 0 for variable-size or unknown element sizes


def _dt(name: str, numpy: Optional[str], itemsize: int) -> DType:
    return DType(name, None if numpy is None else np.dtype(numpy), itemsize)


#: ``tensorflow/core/framework/types.proto`` DataType values (non-reference types).
DTYPES: Dict[int, DType] = {
    1: _dt("float32", "<f4", 4),
    2: _dt("float64", "<f8", 8),
    3: _dt("int32", "<i4", 4),
    4: _dt("uint8", "u1", 1),
    5: _dt("int16", "<i2", 2),
    6: _dt("int8", "i1", 1),
    7: DType("string", OBJECT_DTYPE, 0),
    8: _dt("complex64", "<c8", 8),
    9: _dt("int64", "<i8", 8),
    10: _dt("bool", "?", 1),
    11: _dt("qint8", None, 1),
    12: _dt("quint8", None, 1),
    13: _dt("qint32", None, 4),
    14: DType("bfloat16", _BFLOAT16, 2),
    15: _dt("qint16", None, 2),
    16: _dt("quint16", None, 2),
    17: _dt("uint16", "<u2", 2),
    18: _dt("complex128", "<c16", 16),
    19: _dt("float16", "<f2", 2),
    20: _dt("resource", None, 0),
    21: _dt("variant", None, 0),
    22: _dt("uint32", "<u4", 4),
    23: _dt("uint64", "<u8", 8),
    24: _dt("float8_e5m2", None, 1),
    25: _dt("float8_e4m3fn", None, 1),
    26: _dt("float8_e4m3fnuz", None, 1),
    27: _dt("float8_e4m3b11fnuz", None, 1),
    28: _dt("float8_e5m2fnuz", None, 1),
    29: _dt("int4", None, 0),
    30: _dt("uint4", None, 0),
    31: _dt("int2", None, 0),
    32: _dt("uint2", None, 0),
    33: _dt("float4_e2m1fn", None, 0),
}
DT_STRING = 7
_DTYPE_BY_NAME = {d.name: d for d in DTYPES.values()}
#: Dtypes that are not weights: :func:`load_tf_checkpoint` skips them instead of failing.
NON_NUMERIC = frozenset({"string", "resource", "variant"})


@dataclass(frozen=True)
class TensorEntry:
    """Where and what one tensor is.

    ``offset``/``size`` locate its bytes in data shard ``shard_id`` (V1: the
    stored value inside the file, ``size`` is ``numel * itemsize``);
    ``crc32c`` is the masked crc32c as stored (None for V1). ``dtype`` is
    ``object`` for dtypes numpy cannot hold; ``dtype_name`` is TensorFlow's
    name for the dtype. ``num_slices > 0`` marks a partitioned variable
    (listed, not readable).
    """

    name: str
    dtype: np.dtype
    shape: Tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: Optional[int]
    dtype_name: str = ""
    num_slices: int = 0

    def __post_init__(self) -> None:
        if not self.dtype_name:
            object.__setattr__(self, "dtype_name", self.dtype.name)

    @property
    def numel(self) -> int:
        """Number of elements (Python int, no overflow)."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def numeric(self) -> bool:
        """True unless the dtype is string, resource or variant."""
        return self.dtype_name not in NON_NUMERIC


class TensorNotFoundError(CheckpointFormatError, KeyError):
    """A name that is not in the checkpoint (also a ``KeyError``)."""

    __str__ = Exception.__str__


# --------------------------------------------------------------------------- protobuf pieces shared by V1 and V2


@contextmanager
def decoding(path: PathLike, what: str = "") -> Iterator[None]:
    """Turn a :class:`~i3d_convert.io.protowire.DecodeError` inside the block into CheckpointFormatError."""
    try:
        yield
    except wire.DecodeError as exc:
        raise CheckpointFormatError(f"{what}{exc}", path) from None


def parse_shape(buf: wire.Buffer, spans: List[Tuple[int, int]], what: str) -> Tuple[int, ...]:
    """Decode the ``TensorShapeProto`` occurrences ``spans`` (merged as protobuf does) into a shape."""
    dims: List[int] = []
    for start, end in spans:
        for field in wire.iter_fields(buf, start, end):
            if field.number == 2:
                size = 0
                for dim in wire.iter_fields(buf, *field.span("TensorShapeProto")):
                    if dim.number == 1:
                        size = wire.to_int64(dim.varint("TensorShapeProto.Dim"))
                dims.append(size)
                if len(dims) > MAX_RANK:
                    raise wire.DecodeError(f"{what} has more than {MAX_RANK} dimensions")
            elif field.number == 3 and field.varint("TensorShapeProto"):
                raise wire.DecodeError(f"{what} has unknown rank")
    for d in dims:
        if d < 0:
            raise wire.DecodeError(f"{what} has a negative (unknown) dimension {d} in shape {dims}")
    return tuple(dims)


def dtype_of(number: int, what: str) -> DType:
    """The :class:`DType` for a ``DataType`` enum value, or a DecodeError naming it."""
    dtype = DTYPES.get(number)
    if dtype is None:
        raise wire.DecodeError(f"{what} has unknown dtype {number}")
    return dtype


def check_readable(entry: TensorEntry, path: PathLike) -> np.dtype:
    """The numpy dtype to read ``entry`` as, or a CheckpointFormatError saying why it cannot be read."""
    if entry.num_slices:
        raise CheckpointFormatError(
            f"tensor {entry.name!r} is a partitioned variable saved as {entry.num_slices} slices; "
            "partitioned variables are not supported",
            path,
        )
    numpy_dtype = _DTYPE_BY_NAME[entry.dtype_name].numpy
    if numpy_dtype is None:
        raise CheckpointFormatError(f"tensor {entry.name!r}: dtype {entry.dtype_name} is not supported", path)
    return numpy_dtype


def _load_crc32c_library() -> Optional[ctypes.CDLL]:
    """Google's libcrc32c (BSD-3-Clause), the C library inside the ``google-crc32c`` wheel, or None.

    ``google_crc32c``'s Python functions accept only ``bytes``, so hashing a
    memory-mapped tensor through them costs a copy; its C function
    ``crc32c_extend(crc, data, size)`` reads any address, and ctypes releases
    the GIL while it runs.
    """
    candidates: List[str] = []
    try:
        import google_crc32c

        package_dir = Path(google_crc32c.__file__).parent
        candidates += sorted(glob.glob(str(package_dir.parent / "google_crc32c.libs" / "libcrc32c*.so*")))
        candidates += sorted(glob.glob(str(package_dir / "libcrc32c*")))
    except ImportError:
        pass
    system = ctypes.util.find_library("crc32c")
    candidates += [system] if system else []
    for candidate in candidates:
        try:
            library = ctypes.CDLL(candidate)
            extend = library.crc32c_extend
        except (OSError, AttributeError):
            continue
        extend.argtypes, extend.restype = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t], ctypes.c_uint32
        if extend(0, b"123456789", 9) == 0xE3069283:  # the CRC-32C check value
            return library
    return None


_CRC32C_LIBRARY = _load_crc32c_library()


def buffer_crc32c(data: Union[bytes, bytearray, memoryview, mmap.mmap, np.ndarray], start: int = 0,
                  end: Optional[int] = None) -> int:
    """Unmasked CRC-32C of bytes ``[start, end)`` of a buffer (a read-only mapping is fine), without copying it.

    Reads the buffer in place through libcrc32c when it is loadable, else
    hashes it in bounded copies with ``google_crc32c``; the two agree bit for bit.
    """
    view = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    end = view.size if end is None else end
    if _CRC32C_LIBRARY is None:
        return wire.crc32c(view, start, end)
    if end <= start:
        return 0
    return int(_CRC32C_LIBRARY.crc32c_extend(0, view.ctypes.data + start, end - start))


def masked_crc32c(data: Union[bytes, bytearray, memoryview, mmap.mmap, np.ndarray]) -> int:
    """TensorFlow's masked CRC-32C of a bytes-like object (as stored in checkpoints)."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)  # ndim >= 1 is fine here
    elif isinstance(data, (bytearray, memoryview)):
        data = memoryview(data).cast("B")
    return wire.mask_crc(buffer_crc32c(data))


# --------------------------------------------------------------------------- V2 file names and VersionDef


def index_path_for(prefix: str) -> Path:
    """``<prefix>.index``."""
    return Path(prefix + ".index")


def data_path_for(prefix: str, shard: int, num_shards: int) -> Path:
    """``<prefix>.data-<shard>-of-<num_shards>`` as TensorFlow names it."""
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def int32_fields(buf: wire.Buffer, start: int, end: int, message: str,
                 numbers: Tuple[int, ...]) -> Tuple[Dict[int, int], List[wire.Field]]:
    """The last value of each int32 field in ``numbers`` (0 when absent), and every other field in order."""
    values = dict.fromkeys(numbers, 0)
    others: List[wire.Field] = []
    for field in wire.iter_fields(buf, start, end):
        if field.number in values:
            values[field.number] = wire.to_int32(field.varint(message))
        else:
            others.append(field)
    return values, others


def parse_version(buf: wire.Buffer, start: int, end: int) -> Dict[str, object]:
    """Decode a ``VersionDef``: ``{"producer", "min_consumer", "bad_consumers"}``."""
    values, others = int32_fields(buf, start, end, "VersionDef", (1, 2))
    bad_consumers = [wire.to_int32(v) for f in others if f.number == 3 for v in f.varints(buf, "VersionDef")]
    return {"producer": values[1], "min_consumer": values[2], "bad_consumers": bad_consumers}


# --------------------------------------------------------------------------- memory-mapped files


def map_file(path: Path) -> Union[mmap.mmap, bytes]:
    """Read-only mmap of a file; its bytes where it cannot be mapped (empty file, odd filesystem)."""
    with open(path, "rb") as f:
        try:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # ValueError: empty file
            return f.read()
    if hasattr(mmap, "MADV_WILLNEED"):  # every tensor is read once, front to back: read ahead
        try:
            mapped.madvise(mmap.MADV_WILLNEED)
        except OSError:
            pass
    return mapped


def close_mapping(buf: Union[mmap.mmap, bytes]) -> None:
    """Unmap ``buf`` unless arrays returned by a read still use it (then it goes when they do)."""
    if isinstance(buf, mmap.mmap):
        try:
            buf.close()
        except BufferError:
            pass


def open_mapping(path: Path, what: str, detail: str = "") -> Union[mmap.mmap, bytes]:
    """:func:`map_file`; a missing file raises CheckpointFormatError ``"<what> not found<detail>"``."""
    try:
        return map_file(path)
    except FileNotFoundError:
        raise CheckpointFormatError(f"{what} not found{detail}", path) from None
    except IsADirectoryError:
        raise CheckpointFormatError(f"{what} is a directory, not a file", path) from None
    except OSError as exc:
        raise CheckpointFormatError(f"cannot read {what}: {exc.strerror}", path) from None

