"""Read and write TensorFlow checkpoints without TensorFlow.

Reads TensorFlow's V2 checkpoint format (a *TensorBundle*: ``<prefix>.index``,
a LevelDB table of ``BundleEntryProto`` records, plus raw little-endian data
shards ``<prefix>.data-NNNNN-of-MMMMM``) and, through
:mod:`i3d_convert.io.tf_v1_checkpoint`, the older single-file V1 format that
TF-slim's ImageNet checkpoints use. Writes V2 bundles byte-identical to
``tf.raw_ops.SaveV2`` with names in sorted order.

Every file is untrusted input: anything malformed raises
:class:`~i3d_convert.errors.CheckpointFormatError` (crc mismatches its
subclass :class:`~i3d_convert.errors.ChecksumError`) naming the file, and
sizes are checked against the files before anything is allocated.

Dtypes: the numeric TensorFlow dtypes map to numpy dtypes (little-endian).
``bfloat16`` tensors come back as ``ml_dtypes.bfloat16`` when the
``ml_dtypes`` package is importable (it ships with TensorFlow and JAX) and as
their raw ``uint16`` bit patterns otherwise; ``TensorEntry.dtype_name`` says
``"bfloat16"`` either way. ``string`` tensors read as object arrays of
``bytes``. Other dtypes (quantized, float8, resource, variant, ...) are listed
but not readable.
"""

from __future__ import annotations

import codecs
import logging
import mmap
import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Mapping, Optional, Tuple, Union, cast

import google_crc32c
import numpy as np

from i3d_convert.io import protowire as wire
from i3d_convert.errors import CheckpointFormatError, ChecksumError, I3DConvertError

if TYPE_CHECKING:  # pragma: no cover - tf_v1_checkpoint imports this module
    from i3d_convert.io.tf_v1_checkpoint import V1Checkpoint

PathLike = Union[str, "os.PathLike[str]"]

logger = logging.getLogger(__name__)

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

_OBJECT = np.dtype(object)


@dataclass(frozen=True)
class _DType:
    """One TensorFlow ``DataType``: its name, numpy dtype (None: not readable) and bytes per element."""

    name: str
    numpy: Optional[np.dtype]
    itemsize: int  # 0 for variable-size or unknown element sizes


def _dt(name: str, numpy: Optional[str], itemsize: int) -> _DType:
    return _DType(name, None if numpy is None else np.dtype(numpy), itemsize)


#: ``tensorflow/core/framework/types.proto`` DataType values (non-reference types).
DTYPES: Dict[int, _DType] = {
    1: _dt("float32", "<f4", 4),
    2: _dt("float64", "<f8", 8),
    3: _dt("int32", "<i4", 4),
    4: _dt("uint8", "u1", 1),
    5: _dt("int16", "<i2", 2),
    6: _dt("int8", "i1", 1),
    7: _DType("string", _OBJECT, 0),
    8: _dt("complex64", "<c8", 8),
    9: _dt("int64", "<i8", 8),
    10: _dt("bool", "?", 1),
    11: _dt("qint8", None, 1),
    12: _dt("quint8", None, 1),
    13: _dt("qint32", None, 4),
    14: _DType("bfloat16", _BFLOAT16, 2),
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


# --------------------------------------------------------------------------- helpers shared with V1


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


def dtype_of(number: int, what: str) -> _DType:
    """The :class:`_DType` for a ``DataType`` enum value, or a DecodeError naming it."""
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


def masked_crc32c(data: Union[bytes, bytearray, memoryview, mmap.mmap, np.ndarray]) -> int:
    """TensorFlow's masked CRC-32C of a bytes-like object (as stored in checkpoints)."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)  # ndim >= 1 is fine here
    elif isinstance(data, (bytearray, memoryview)):
        data = memoryview(data).cast("B")
    return wire.mask_crc(wire.crc32c(data))


# --------------------------------------------------------------------------- V2 index parsing


def index_path_for(prefix: str) -> Path:
    """``<prefix>.index``."""
    return Path(prefix + ".index")


def data_path_for(prefix: str, shard: int, num_shards: int) -> Path:
    """``<prefix>.data-<shard>-of-<num_shards>`` as TensorFlow names it."""
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def parse_version(buf: wire.Buffer, start: int, end: int) -> Dict[str, object]:
    """Decode a ``VersionDef``: ``{"producer", "min_consumer", "bad_consumers"}``."""
    producer, min_consumer = 0, 0
    bad_consumers: List[int] = []
    for field in wire.iter_fields(buf, start, end):
        if field.number == 1:
            producer = wire.to_int32(field.varint("VersionDef"))
        elif field.number == 2:
            min_consumer = wire.to_int32(field.varint("VersionDef"))
        elif field.number == 3:
            bad_consumers.extend(wire.to_int32(v) for v in field.varints(buf, "VersionDef"))
    return {"producer": producer, "min_consumer": min_consumer, "bad_consumers": bad_consumers}


def _parse_header(buf: wire.Buffer, start: int, end: int) -> Tuple[Dict[str, object], int]:
    """``BundleHeaderProto`` -> (header dict, number of shards)."""
    num_shards, endianness = 0, 0
    version = parse_version(buf, 0, 0)
    for field in wire.iter_fields(buf, start, end):
        if field.number == 1:
            num_shards = wire.to_int32(field.varint("BundleHeaderProto"))
        elif field.number == 2:
            endianness = wire.to_int32(field.varint("BundleHeaderProto"))
        elif field.number == 3:
            version = parse_version(buf, *field.span("BundleHeaderProto"))
    if endianness == 1:
        raise wire.DecodeError("checkpoint is big-endian; only little-endian checkpoints are supported")
    if endianness != 0:
        raise wire.DecodeError(f"bundle header has unknown endianness {endianness}")
    if not 1 <= num_shards <= MAX_SHARDS:
        raise wire.DecodeError(f"bundle header claims {num_shards} data shards")
    min_consumer = cast(int, version["min_consumer"])
    if min_consumer > BUNDLE_VERSION or BUNDLE_VERSION in cast(List[int], version["bad_consumers"]):
        raise wire.DecodeError(f"checkpoint needs a newer reader (bundle version {version})")
    return {"format": "V2", "num_shards": num_shards, "endianness": endianness, "version": version}, num_shards


def _parse_entry(name: str, buf: wire.Buffer, start: int, end: int, num_shards: int) -> TensorEntry:
    what = f"tensor {name!r}"
    dtype_num, shard_id, offset, size, crc, num_slices = 0, 0, 0, 0, 0, 0
    shape_spans: List[Tuple[int, int]] = []
    message = "BundleEntryProto"
    for field in wire.iter_fields(buf, start, end):
        if field.number == 1:
            dtype_num = wire.to_int32(field.varint(message))
        elif field.number == 2:
            shape_spans.append(field.span(message))
        elif field.number == 3:
            shard_id = wire.to_int32(field.varint(message))
        elif field.number == 4:
            offset = wire.to_int64(field.varint(message))
        elif field.number == 5:
            size = wire.to_int64(field.varint(message))
        elif field.number == 6:
            crc = field.fixed32(message)
        elif field.number == 7:
            for _ in wire.iter_fields(buf, *field.span(message)):
                pass  # structure check only; slices are not read
            num_slices += 1
    dtype = dtype_of(dtype_num, what)
    shape = parse_shape(buf, shape_spans, what)
    if not 0 <= shard_id < num_shards:
        raise wire.DecodeError(f"{what} is in shard {shard_id}, but the bundle has {num_shards} shards")
    if offset < 0 or size < 0:
        raise wire.DecodeError(f"{what} has negative offset {offset} or size {size}")
    entry = TensorEntry(
        name, dtype.numpy if dtype.numpy is not None else _OBJECT, shape, shard_id, offset, size, crc,
        dtype.name, num_slices,
    )
    if dtype.itemsize and not num_slices and entry.numel * dtype.itemsize != size:
        raise wire.DecodeError(
            f"{what} claims {size} bytes, but shape {list(shape)} of {dtype.name} needs "
            f"{entry.numel * dtype.itemsize} bytes (size mismatch)"
        )
    return entry


def _parse_index(buf: wire.Buffer) -> Tuple[Dict[str, object], Dict[str, TensorEntry]]:
    header: Optional[Dict[str, object]] = None
    num_shards = 0
    entries: Dict[str, TensorEntry] = {}
    for key, start, end in wire.read_table(buf):
        if key == b"":
            header, num_shards = _parse_header(buf, start, end)
            continue
        if header is None:
            raise wire.DecodeError("index has no bundle header entry (not a TensorBundle index)")
        if key[0] == 0:
            continue  # one slice of a partitioned variable; its full entry carries num_slices
        name = wire.decode_utf8(key, "tensor name")
        entries[name] = _parse_entry(name, buf, start, end, num_shards)
    if header is None:
        raise wire.DecodeError("index has no bundle header entry (not a TensorBundle index)")
    return header, entries


# --------------------------------------------------------------------------- V2 reader


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


class _BundleV2:
    """A TensorBundle: parsed index plus lazily mapped data shards."""

    format = "V2"

    def __init__(self, prefix: str, verify_crc: bool) -> None:
        self.prefix = prefix
        self.index_path = index_path_for(prefix)
        self.verify_crc = verify_crc
        buf = open_mapping(self.index_path, "index file")
        try:
            if not buf:
                raise CheckpointFormatError("index file is empty", self.index_path)
            with decoding(self.index_path):
                self.header, self.entries = _parse_index(buf)
        finally:
            close_mapping(buf)
        self.num_shards = cast(int, self.header["num_shards"])
        self._shards: Dict[int, Union[mmap.mmap, bytes]] = {}
        self._paths: Dict[int, Path] = {}  # data file of each mapped shard

    @property
    def data_paths(self) -> Tuple[Path, ...]:
        return tuple(data_path_for(self.prefix, i, self.num_shards) for i in range(self.num_shards))

    def _shard(self, shard_id: int) -> Union[mmap.mmap, bytes]:
        buf = self._shards.get(shard_id)
        if buf is None:
            path = self._paths[shard_id] = data_path_for(self.prefix, shard_id, self.num_shards)
            detail = f" (shard {shard_id} of {self.num_shards} named by {self.index_path.name})"
            buf = open_mapping(path, "data file", detail)
            self._shards[shard_id] = buf
        return buf

    def read(self, entry: TensorEntry) -> np.ndarray:
        dtype = check_readable(entry, self.index_path)
        buf = self._shard(entry.shard_id)
        end = entry.offset + entry.size
        path = self._paths[entry.shard_id]
        if end > len(buf):
            raise CheckpointFormatError(
                f"tensor {entry.name!r} needs bytes [{entry.offset}, {end}) but the data file has only "
                f"{len(buf)} bytes (truncated data file?)",
                path,
            )
        if entry.dtype_name == "string":
            with decoding(path, f"tensor {entry.name!r}: "):
                return _read_strings(buf, entry, self.verify_crc, path)
        if self.verify_crc:
            actual = wire.mask_crc(wire.crc32c(buf, entry.offset, end))
            if actual != entry.crc32c:
                raise ChecksumError(
                    f"tensor {entry.name!r} is corrupt: crc32c {entry.crc32c:#010x} stored, "
                    f"{actual:#010x} computed (checksum mismatch)",
                    path,
                )
        return np.frombuffer(buf, dtype=dtype, count=entry.numel, offset=entry.offset).reshape(entry.shape)

    def release(self, entry: TensorEntry) -> None:
        """Drop the tensor's pages from this process's memory (they stay in the page cache and
        are read back on the next access), so a converter that copies tensor by tensor never
        holds the checkpoint twice."""
        buf = self._shards.get(entry.shard_id)
        if not isinstance(buf, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED") or entry.size == 0:
            return
        start = entry.offset - entry.offset % mmap.PAGESIZE
        try:
            buf.madvise(mmap.MADV_DONTNEED, start, entry.offset + entry.size - start)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        shards, self._shards = self._shards, {}
        for buf in shards.values():
            close_mapping(buf)


def _read_strings(buf: Union[mmap.mmap, bytes], entry: TensorEntry, verify: bool, path: Path) -> np.ndarray:
    """Decode a string tensor: varint64 lengths, masked crc32c of the lengths, then the bytes.

    The entry's crc32c covers each length as a little-endian uint32 (uint64 if
    larger), then the 4 stored checksum bytes, then the string bytes.
    """
    start, end, n = entry.offset, entry.offset + entry.size, entry.numel
    if n > entry.size:
        raise wire.DecodeError(f"string tensor of {n} elements cannot fit in {entry.size} bytes")
    window = np.frombuffer(buf, dtype=np.uint8, count=min(entry.size, 10 * n), offset=start)
    terminators = np.flatnonzero(window < 0x80)
    if terminators.size < n:
        raise wire.DecodeError("string lengths run past the end of the tensor")
    pos = start + (int(terminators[n - 1]) + 1 if n else 0)
    lengths = wire.decode_packed_varints(buf, start, pos)
    remaining = end - pos - 4
    if remaining < 0 or (n and float(lengths.sum(dtype=np.float64)) > remaining + 1):
        raise wire.DecodeError(f"string lengths need more than the {max(remaining, 0)} bytes left")
    if int(lengths.sum(dtype=np.uint64)) != remaining:
        raise wire.DecodeError(f"string lengths add up to {int(lengths.sum(dtype=np.uint64))} bytes, not {remaining}")
    stored = bytes(buf[pos : pos + 4])
    if verify:
        if remaining <= 0xFFFFFFFF:
            packed = lengths.astype("<u4").tobytes()
        else:
            packed = b"".join(int(v).to_bytes(4 if v <= 0xFFFFFFFF else 8, "little") for v in lengths)
        if wire.mask_crc(wire.crc32c(packed)).to_bytes(4, "little") != stored:
            raise ChecksumError(f"tensor {entry.name!r} is corrupt: string lengths checksum mismatch", path)
        crc = wire.crc32c(packed + stored)
        for chunk in range(pos + 4, end, 1 << 20):
            crc = google_crc32c.extend(crc, bytes(buf[chunk : min(chunk + (1 << 20), end)]))
        if wire.mask_crc(crc) != entry.crc32c:
            raise ChecksumError(f"tensor {entry.name!r} is corrupt: crc32c mismatch (checksum mismatch)", path)
    out = np.empty(n, dtype=object)
    pos += 4
    for i, length in enumerate(lengths.tolist()):
        out[i] = bytes(buf[pos : pos + length])
        pos += length
    out.flags.writeable = False
    return out.reshape(entry.shape)


# --------------------------------------------------------------------------- path resolution

_DATA_SUFFIX = re.compile(r"\.data-\d{5,}-of-\d{5,}$")
_STATE_LINE = re.compile(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"\s*$', re.MULTILINE)


def _resolve(path: PathLike) -> Tuple[str, str]:
    """``("V2", prefix)`` or ``("V1", file)`` for any accepted spelling of a checkpoint path."""
    try:
        return _resolve_path(os.fspath(path))
    except (OSError, ValueError) as exc:  # permission denied, NUL in the path, ...
        raise CheckpointFormatError(f"cannot access checkpoint path: {exc}", os.fspath(path)) from None


def _resolve_path(text: str) -> Tuple[str, str]:
    p = Path(text)
    if p.is_dir():
        return _resolve_directory(p)
    if text.endswith(".index"):
        if not p.exists():
            raise CheckpointFormatError("index file not found", p)
        return "V2", text[: -len(".index")]
    match = _DATA_SUFFIX.search(text)
    if match:
        prefix = text[: match.start()]
        if not index_path_for(prefix).exists():
            raise CheckpointFormatError(f"index file not found for data file {p.name}", index_path_for(prefix))
        return "V2", prefix
    if index_path_for(text).exists():
        return "V2", text
    if text.endswith(".meta") and index_path_for(text[: -len(".meta")]).exists():
        return "V2", text[: -len(".meta")]  # the MetaGraph beside a V2 checkpoint
    if p.is_file():
        return "V1", text
    raise CheckpointFormatError(f"checkpoint not found (neither this file nor {p.name}.index exists)", p)


def _resolve_directory(directory: Path) -> Tuple[str, str]:
    state = directory / "checkpoint"
    if state.is_file():
        target = _state_target(state)
        if target is not None:
            candidate = Path(target) if os.path.isabs(target) else directory / target
            if not (candidate.exists() or index_path_for(str(candidate)).exists()):
                candidate = directory / Path(target).name  # the folder was moved since it was written
            if candidate.is_dir():
                raise CheckpointFormatError(f"checkpoint state file names a directory: {target}", state)
            try:
                return _resolve_path(str(candidate))
            except CheckpointFormatError as exc:
                raise CheckpointFormatError(
                    f"checkpoint state file names {target!r}, which is not a readable checkpoint ({exc.problem})", state
                ) from None
    indexes = sorted(directory.glob("*.index"))
    if not indexes and (directory / "variables" / "variables.index").is_file():
        return "V2", str(directory / "variables" / "variables")  # a SavedModel / TF-Hub module folder
    if len(indexes) == 1:
        return "V2", str(indexes[0])[: -len(".index")]
    if len(indexes) > 1:
        names = ", ".join(p.name for p in indexes[:5]) + (", ..." if len(indexes) > 5 else "")
        raise CheckpointFormatError(
            f"directory holds {len(indexes)} checkpoints ({names}) and no 'checkpoint' state file; "
            "pass one prefix (ambiguous)",
            directory,
        )
    tables = [
        p for p in sorted(directory.iterdir())
        if p.is_file() and p.name != "checkpoint" and not _DATA_SUFFIX.search(p.name) and _has_table_magic(p)
    ]
    if len(tables) == 1:
        return "V1", str(tables[0])
    if len(tables) > 1:
        raise CheckpointFormatError(
            f"directory holds {len(tables)} V1 checkpoint files ({', '.join(p.name for p in tables[:5])}); "
            "pass one (ambiguous)",
            directory,
        )
    raise CheckpointFormatError("no checkpoint found in directory (no .index file, no V1 checkpoint)", directory)


def _state_target(state: Path) -> Optional[str]:
    """``model_checkpoint_path`` from a ``checkpoint`` state file (text-format CheckpointState)."""
    try:
        with open(state, "rb") as f:
            text = f.read(1 << 20).decode("utf-8")
        match = _STATE_LINE.search(text)
        if match is None:
            return None
        unescaped: bytes = codecs.escape_decode(match.group(1).encode("utf-8"))[0]  # type: ignore[attr-defined]
        return unescaped.decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError):
        raise CheckpointFormatError("unreadable checkpoint state file", state) from None


def _has_table_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < wire.FOOTER_SIZE:
                return False
            f.seek(-8, os.SEEK_END)
            return int.from_bytes(f.read(8), "little") == wire.TABLE_MAGIC
    except OSError:
        return False


# --------------------------------------------------------------------------- public reader


class CheckpointReader:
    """A TensorFlow checkpoint (V2 TensorBundle or V1 single file), opened for reading.

    ``path`` may be a prefix (``.../model.ckpt``), its ``.index``, ``.meta``
    or a ``.data-*`` file, a V1 checkpoint file, or a directory holding exactly
    one checkpoint (or a ``checkpoint`` state file naming one, or a SavedModel's
    ``variables/variables``). Opening parses and
    validates the index only; data shards are memory-mapped on first
    :meth:`read`, so listing works without them. Use as a context manager.
    """

    def __init__(self, path: PathLike, *, verify_crc: bool = True) -> None:
        kind, resolved = _resolve(path)
        self.verify_crc = verify_crc
        if kind == "V2":
            self._backend: Union[_BundleV2, "V1Checkpoint"] = _BundleV2(resolved, verify_crc)
        else:
            from i3d_convert.io.tf_v1_checkpoint import V1Checkpoint

            self._backend = V1Checkpoint(Path(resolved), verify_crc=verify_crc)
        #: The checkpoint prefix (V2) or file (V1).
        self.path = Path(resolved)
        #: ``"V2"`` or ``"V1"``.
        self.format: str = self._backend.format
        #: The ``.index`` file (V2) or the checkpoint file itself (V1).
        self.index_path: Path = self._backend.index_path
        #: ``num_shards``, ``endianness`` (0 = little), ``version`` and ``format``.
        self.header: Dict[str, object] = self._backend.header
        #: Every tensor by name, sorted, including ones that cannot be read.
        self.entries: Dict[str, TensorEntry] = self._backend.entries

    @property
    def data_paths(self) -> Tuple[Path, ...]:
        """The data shard files the index refers to (V1: the checkpoint file)."""
        return self._backend.data_paths

    def keys(self) -> List[str]:
        """All tensor names, sorted."""
        return list(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a read-only array with the entry's dtype and shape.

        V2: a zero-copy view of the memory-mapped data shard, crc32c-verified
        first when ``verify_crc``. Raises :class:`TensorNotFoundError` for an
        unknown name, :class:`ChecksumError` on a crc mismatch and
        :class:`CheckpointFormatError` for anything else wrong.
        """
        entry = self.entries.get(name)
        if entry is None:
            raise TensorNotFoundError(f"no tensor named {name!r} in checkpoint", self.index_path)
        return self._backend.read(entry)

    def release(self, name: str) -> None:
        """Best effort: let the OS drop ``name``'s bytes from this process's memory once a
        caller has copied them (arrays already returned stay valid and correct)."""
        entry = self.entries.get(name)
        release = getattr(self._backend, "release", None)
        if entry is not None and release is not None:
            release(entry)

    def close(self) -> None:
        """Release the data shard mappings (arrays already returned stay valid)."""
        self._backend.close()

    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointReader({str(self.path)!r}, format={self.format}, tensors={len(self.entries)})"


def list_variables(path: PathLike) -> List[Tuple[str, str, Tuple[int, ...]]]:
    """``(name, dtype name, shape)`` of every tensor, sorted by name (like ``tf.train.list_variables``)."""
    with CheckpointReader(path) as reader:
        return [(e.name, e.dtype_name, e.shape) for e in reader.entries.values()]


def load_tf_checkpoint(path: PathLike, *, verify_crc: bool = True) -> Dict[str, np.ndarray]:
    """Every numeric tensor by name (sorted), as read-only arrays (zero-copy views for V2).

    String, resource and variant tensors (e.g. TF2's ``_CHECKPOINTABLE_OBJECT_GRAPH``)
    are skipped and named in an INFO log record; anything else unreadable raises.
    """
    with CheckpointReader(path, verify_crc=verify_crc) as reader:
        skipped = [f"{e.name} ({e.dtype_name})" for e in reader.entries.values() if not e.numeric]
        if skipped:
            logger.info("%s: skipped non-numeric tensors: %s", reader.path, ", ".join(skipped))
        return {name: reader.read(name) for name, e in reader.entries.items() if e.numeric}


# --------------------------------------------------------------------------- writer


def _tf_dtype_number(dtype: np.dtype) -> Optional[int]:
    if dtype.name == "bfloat16":
        return 14
    for number, known in DTYPES.items():
        if known.numpy is not None and known.numpy != _OBJECT and known.name != "bfloat16":
            if dtype.kind == known.numpy.kind and dtype.itemsize == known.numpy.itemsize:
                return number
    return None


def _entry_proto(dtype: int, shape: Tuple[int, ...], offset: int, size: int, crc: int) -> bytes:
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
    index_path = index_path_for(prefix_text)
    data_path = data_path_for(prefix_text, 0, 1)
    tensors: List[Tuple[bytes, int, np.ndarray]] = []
    for name, value in arrays.items():
        if not isinstance(name, str) or not name or name[0] == "\x00":
            raise I3DConvertError(f"invalid tensor name {name!r} (must be a non-empty string)", prefix_text)
        try:
            key = name.encode("utf-8")
        except UnicodeEncodeError:
            raise I3DConvertError(f"tensor name {name!r} is not valid Unicode", prefix_text) from None
        array = np.asarray(value)
        number = _tf_dtype_number(array.dtype)
        if number is None:
            raise I3DConvertError(f"tensor {name!r} has unsupported dtype {array.dtype}", prefix_text)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        if not array.flags.c_contiguous:
            array = array.copy(order="C")  # not np.ascontiguousarray: it turns scalars into shape (1,)
        tensors.append((key, number, array))
    tensors.sort(key=lambda t: t[0])

    temps: List[str] = []
    try:
        fd, data_tmp = _create_temporary(prefix_text, "data", temps)
        items = [(b"", wire.field_varint(1, 1) + wire.field_bytes(3, wire.field_varint(1, BUNDLE_VERSION)))]
        offset = 0
        with os.fdopen(fd, "wb") as f:
            for key, number, array in tensors:
                raw = array.reshape(-1).view(np.uint8)
                f.write(raw.data)
                crc = masked_crc32c(raw)
                items.append((key, _entry_proto(number, array.shape, offset, raw.size, crc)))
                offset += raw.size
            f.flush()
            os.fsync(f.fileno())
        fd, index_tmp = _create_temporary(prefix_text, "index", temps)
        with os.fdopen(fd, "wb") as f:
            f.write(wire.encode_table(items))
            f.flush()
            os.fsync(f.fileno())
        os.replace(data_tmp, data_path)
        temps.remove(data_tmp)
        os.replace(index_tmp, index_path)
        temps.remove(index_tmp)
    except OSError as exc:
        raise I3DConvertError(f"cannot write checkpoint: {exc.strerror or exc}", prefix_text) from None
    finally:
        for temp in temps:
            try:
                os.unlink(temp)
            except OSError:
                pass


__all__ = [
    "CheckpointReader",
    "TensorEntry",
    "TensorNotFoundError",
    "list_variables",
    "load_tf_checkpoint",
    "masked_crc32c",
    "write_checkpoint",
]
