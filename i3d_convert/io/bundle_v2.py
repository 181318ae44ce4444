"""Read TensorFlow's V2 checkpoint format (a *TensorBundle*) without TensorFlow.

A bundle is ``<prefix>.index``, a LevelDB table of ``BundleEntryProto``
records keyed by tensor name (the empty key holds the ``BundleHeaderProto``),
plus raw little-endian data shards ``<prefix>.data-NNNNN-of-MMMMM``.
:class:`BundleV2` parses and validates the index when opened and
memory-maps the data shards on first read; sizes are checked against the
files before anything is allocated. Used through
:class:`i3d_convert.io.checkpoint_reader.CheckpointReader`.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union, cast

import google_crc32c
import numpy as np

from i3d_convert.io import protowire as wire
from i3d_convert.errors import CheckpointFormatError, ChecksumError
from i3d_convert.io.bundle_format import (
    BUNDLE_VERSION,
    buffer_crc32c,
    MAX_SHARDS,
    OBJECT_DTYPE,
    TensorEntry,
    check_readable,
    close_mapping,
    data_path_for,
    decoding,
    dtype_of,
    index_path_for,
    int32_fields,
    open_mapping,
    parse_shape,
    parse_version,
)

# --------------------------------------------------------------------------- index parsing


def _parse_header(buf: wire.Buffer, start: int, end: int) -> Tuple[Dict[str, object], int]:
    """``BundleHeaderProto`` -> (header dict, number of shards)."""
    values, others = int32_fields(buf, start, end, "BundleHeaderProto", (1, 2))
    num_shards, endianness = values[1], values[2]
    version = parse_version(buf, 0, 0)
    for field in others:
        if field.number == 3:
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
        name, dtype.numpy if dtype.numpy is not None else OBJECT_DTYPE, shape, shard_id, offset, size, crc,
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


# --------------------------------------------------------------------------- reader


class BundleV2:
    """A TensorBundle: parsed index plus lazily mapped data shards.

    ``header``, ``entries``, ``index_path``, ``data_paths``, :meth:`read`,
    :meth:`release` and :meth:`close` are what
    :class:`~i3d_convert.io.checkpoint_reader.CheckpointReader` uses (as it
    does of :class:`~i3d_convert.io.tf_v1_checkpoint.V1Checkpoint`).
    """

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
            actual = wire.mask_crc(buffer_crc32c(buf, entry.offset, end))
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
