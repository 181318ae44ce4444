"""Byte-level codecs under TensorFlow checkpoints: protobuf wire format and LevelDB tables.

Both checkpoint formats (V1 ``SavedTensorSlices`` files and V2 TensorBundle
``.index`` files) are LevelDB-style tables (SSTables, TensorFlow's
``tsl/lib/io/table``) whose values are serialized protocol buffers. This module
decodes and encodes those two layers and nothing else; it knows no checkpoint
semantics.

Every decoder treats its input as untrusted: any malformed byte raises
:class:`DecodeError` (never ``IndexError``/``struct.error``/...), every length
is checked against the bytes actually present before it is used, and no
decoder does more work than a constant times the input size. Callers turn
``DecodeError`` into a :class:`~i3d_convert.errors.CheckpointFormatError`
carrying the file path.
"""

from __future__ import annotations

import struct
import mmap
from typing import Iterable, Iterator, List, NamedTuple, Optional, Tuple, Union

import google_crc32c
import numpy as np

#: What the decoders read: ``bytes`` or a read-only ``mmap``.
Buffer = Union[bytes, mmap.mmap]

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LEN = 2
WIRE_START_GROUP = 3
WIRE_END_GROUP = 4
WIRE_FIXED32 = 5

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two padded block handles (40 bytes) + 8-byte magic
BLOCK_TRAILER_SIZE = 5  # 1-byte compression type + 4-byte masked crc32c
_MAX_HANDLE_BYTES = 20  # two varint64s
_CRC_MASK_DELTA = 0xA282EAD8
_CRC_CHUNK = 1 << 20  # google_crc32c only hashes ``bytes``; copy at most this much at once

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class DecodeError(Exception):
    """Malformed bytes. The message states the problem in one line; the caller adds the path."""


# --------------------------------------------------------------------------- crc32c


def crc32c(data: Union[Buffer, memoryview, np.ndarray], start: int = 0, end: Optional[int] = None) -> int:
    """Unmasked CRC-32C of ``data[start:end]``, hashing a large buffer in bounded chunks."""
    end = len(data) if end is None else end
    if isinstance(data, bytes) and start == 0 and end == len(data):
        return google_crc32c.value(data)
    crc = 0
    for pos in range(start, end, _CRC_CHUNK):
        crc = google_crc32c.extend(crc, bytes(data[pos : min(pos + _CRC_CHUNK, end)]))
    return crc


def mask_crc(crc: int) -> int:
    """LevelDB/TensorFlow crc masking: rotate right by 15 bits and add a constant."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


# --------------------------------------------------------------------------- varints


def read_varint(buf: Buffer, pos: int, end: int, max_bytes: int = 10) -> Tuple[int, int]:
    """Decode an unsigned varint at ``buf[pos:end]``; return ``(value, next_pos)``.

    ``max_bytes`` is 10 for varint64 and 5 for varint32; the value must fit in
    ``7 * max_bytes`` bits capped at 64 (resp. 32) bits.
    """
    result = 0
    shift = 0
    limit = min(end, pos + max_bytes)
    while pos < limit:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if result >> (64 if max_bytes == 10 else 32):
                raise DecodeError(f"varint overflows {64 if max_bytes == 10 else 32} bits")
            return result, pos
        shift += 7
    if pos >= end:
        raise DecodeError("truncated varint")
    raise DecodeError(f"varint longer than {max_bytes} bytes")


def encode_varint(value: int) -> bytes:
    """Encode a non-negative int (< 2**64) as a varint; negative ints as 64-bit two's complement."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def to_int64(value: int) -> int:
    """Reinterpret a decoded varint as a signed 64-bit int (protobuf ``int64``)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def to_int32(value: int) -> int:
    """Reinterpret a decoded varint as protobuf ``int32`` (low 32 bits, signed)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def decode_packed_varints(buf: Buffer, start: int, end: int) -> np.ndarray:
    """Decode a packed run of varints into a ``uint64`` array (vectorised, no Python loop)."""
    raw = np.frombuffer(buf, dtype=np.uint8, count=end - start, offset=start)
    if raw.size == 0:
        return np.zeros(0, dtype=np.uint64)
    ends = np.flatnonzero(raw < 0x80)
    if ends.size == 0 or ends[-1] != raw.size - 1:
        raise DecodeError("truncated varint in packed field")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if int(lengths.max()) > 10:
        raise DecodeError("varint longer than 10 bytes in packed field")
    if np.any((lengths == 10) & (raw[ends] > 1)):
        raise DecodeError("varint overflows 64 bits in packed field")
    values = np.zeros(ends.size, dtype=np.uint64)
    payload = (raw & 0x7F).astype(np.uint64)
    for k in range(int(lengths.max())):
        rows = np.flatnonzero(lengths > k)
        values[rows] |= payload[starts[rows] + k] << np.uint64(7 * k)
    return values


# --------------------------------------------------------------------------- protobuf


class Field(NamedTuple):
    """One decoded protobuf field.

    ``value`` is the number for varint/fixed fields and the length for
    length-delimited ones, whose payload is ``buf[start:end]``.
    """

    number: int
    wire: int
    value: int
    start: int
    end: int

    def _expect(self, expected: int, message: str) -> None:
        if self.wire != expected:
            raise DecodeError(f"{message} field {self.number} has wire type {self.wire}, expected {expected}")

    def varint(self, message: str) -> int:
        """The value of a varint field (int32/int64/uint64/bool/enum), or DecodeError naming ``message``."""
        self._expect(WIRE_VARINT, message)
        return self.value

    def fixed32(self, message: str) -> int:
        """The value of a fixed32 field."""
        self._expect(WIRE_FIXED32, message)
        return self.value

    def span(self, message: str) -> Tuple[int, int]:
        """The payload span of a length-delimited field (bytes, string, sub-message, packed values)."""
        self._expect(WIRE_LEN, message)
        return self.start, self.end

    def varints(self, buf: Buffer, message: str) -> List[int]:
        """The values of one occurrence of a repeated varint field, packed or not."""
        if self.wire == WIRE_VARINT:
            return [self.value]
        start, end = self.span(message)
        out = []
        while start < end:
            item, start = read_varint(buf, start, end)
            out.append(item)
        return out


def iter_fields(buf: Buffer, start: int, end: int) -> Iterator[Field]:
    """Yield the fields of the message ``buf[start:end]`` in order.

    Lengths are checked against the message end before they are used; groups
    and invalid wire types or field numbers are errors.
    """
    pos = start
    while pos < end:
        tag, pos = read_varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0 or number >= 1 << 29:
            raise DecodeError(f"invalid protobuf field number {number}")
        if wire == WIRE_VARINT:
            value, pos = read_varint(buf, pos, end)
            yield Field(number, wire, value, pos, pos)
        elif wire == WIRE_LEN:
            length, pos = read_varint(buf, pos, end)
            if length > end - pos:
                raise DecodeError(f"protobuf field {number} claims {length} bytes, only {end - pos} left")
            yield Field(number, wire, length, pos, pos + length)
            pos += length
        elif wire == WIRE_FIXED32:
            if end - pos < 4:
                raise DecodeError(f"truncated fixed32 protobuf field {number}")
            yield Field(number, wire, _U32.unpack_from(buf, pos)[0], pos, pos + 4)
            pos += 4
        elif wire == WIRE_FIXED64:
            if end - pos < 8:
                raise DecodeError(f"truncated fixed64 protobuf field {number}")
            yield Field(number, wire, _U64.unpack_from(buf, pos)[0], pos, pos + 8)
            pos += 8
        else:
            raise DecodeError(f"protobuf field {number} has unsupported wire type {wire}")


def decode_utf8(data: bytes, what: str) -> str:
    """Decode a protobuf string field, turning bad UTF-8 into :class:`DecodeError`."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"{what} is not valid UTF-8: {data[:40]!r}") from None


def field_varint(number: int, value: int) -> bytes:
    """Encode a varint field (caller omits proto3 defaults)."""
    return encode_varint(number << 3 | WIRE_VARINT) + encode_varint(value)


def field_bytes(number: int, data: bytes) -> bytes:
    """Encode a length-delimited field (bytes, string or sub-message)."""
    return encode_varint(number << 3 | WIRE_LEN) + encode_varint(len(data)) + data


def field_fixed32(number: int, value: int) -> bytes:
    """Encode a fixed32 field."""
    return encode_varint(number << 3 | WIRE_FIXED32) + _U32.pack(value)


# --------------------------------------------------------------------------- tables (SSTables)


def _read_handle(buf: Buffer, pos: int, end: int) -> Tuple[int, int, int]:
    offset, pos = read_varint(buf, pos, end)
    size, pos = read_varint(buf, pos, end)
    return offset, size, pos


def _checked_block(buf: Buffer, offset: int, size: int, data_end: int, what: str, verify: bool) -> None:
    """Check that a block plus trailer lies in ``buf[:data_end]``, is uncompressed and matches its crc."""
    if offset + size + BLOCK_TRAILER_SIZE > data_end:
        raise DecodeError(
            f"{what} block [{offset}, {offset + size}) plus trailer lies outside the table data "
            f"({data_end} bytes)"
        )
    kind = buf[offset + size]
    if kind != 0:
        name = {1: "snappy", 2: "zlib"}.get(kind, f"unknown type {kind}")
        raise DecodeError(
            f"{what} block at offset {offset} is compressed ({name}); only uncompressed tables are supported"
        )
    if verify:
        stored = _U32.unpack_from(buf, offset + size + 1)[0]
        actual = mask_crc(google_crc32c.extend(crc32c(buf, offset, offset + size), bytes((kind,))))
        if stored != actual:
            raise DecodeError(
                f"{what} block at offset {offset} is corrupt (crc32c {stored:#010x} stored, {actual:#010x} computed)"
            )


def _block_entries(buf: Buffer, offset: int, size: int, what: str) -> Iterator[Tuple[bytes, int, int]]:
    """Yield ``(key, value_start, value_end)`` for each entry of the block ``buf[offset:offset+size]``."""
    if size < 4:
        raise DecodeError(f"{what} block at offset {offset} is {size} bytes, too short for its restart count")
    block_end = offset + size
    num_restarts = _U32.unpack_from(buf, block_end - 4)[0]
    if num_restarts > (size - 4) // 4:
        raise DecodeError(f"{what} block at offset {offset} claims {num_restarts} restart points, more than fit")
    data_end = block_end - 4 - 4 * num_restarts
    restarts = np.frombuffer(buf, dtype="<u4", count=num_restarts, offset=data_end)  # a view: no copy
    if data_end > offset and (num_restarts == 0 or restarts[0] != 0):
        raise DecodeError(f"{what} block at offset {offset} has no restart point at its first entry")
    next_restart = 0
    key = b""
    pos = offset
    while pos < data_end:
        shared, pos2 = read_varint(buf, pos, data_end, 5)
        non_shared, pos2 = read_varint(buf, pos2, data_end, 5)
        value_len, pos2 = read_varint(buf, pos2, data_end, 5)
        if next_restart < num_restarts and restarts[next_restart] == pos - offset:
            if shared:
                raise DecodeError(f"{what} block at offset {offset}: entry at a restart point shares a key prefix")
            next_restart += 1
        if shared > len(key):
            raise DecodeError(f"{what} block at offset {offset}: entry shares {shared} bytes of a {len(key)}-byte key")
        if non_shared + value_len > data_end - pos2:
            raise DecodeError(f"{what} block at offset {offset}: entry overruns the block")
        key = key[:shared] + bytes(buf[pos2 : pos2 + non_shared])
        value_start = pos2 + non_shared
        pos = value_start + value_len
        yield key, value_start, pos
    if next_restart != num_restarts and not (data_end == offset and not restarts.any()):
        raise DecodeError(f"{what} block at offset {offset} has a restart point that is not an entry boundary")


def read_table(buf: Buffer, *, verify_checksums: bool = True) -> List[Tuple[bytes, int, int]]:
    """Every ``(key, value_start, value_end)`` of an uncompressed LevelDB table, in key order.

    Value spans index ``buf`` directly (blocks are stored uncompressed), so
    values are never copied. Checks: footer magic, handles inside the file,
    block trailers (type 0, crc32c when ``verify_checksums``), restart arrays,
    entry bounds, data blocks in file order without overlap, and keys strictly
    increasing (sorted and unique).
    """
    size = len(buf)
    if size < FOOTER_SIZE:
        raise DecodeError(f"file is {size} bytes, too short for a table footer ({FOOTER_SIZE} bytes)")
    footer = size - FOOTER_SIZE
    magic = _U64.unpack_from(buf, size - 8)[0]
    if magic != TABLE_MAGIC:
        raise DecodeError(f"bad table magic number {magic:#018x} (not a TensorFlow checkpoint table)")
    meta_offset, meta_size, pos = _read_handle(buf, footer, footer + _MAX_HANDLE_BYTES * 2)
    index_offset, index_size, pos = _read_handle(buf, pos, footer + _MAX_HANDLE_BYTES * 2)
    if meta_offset + meta_size + BLOCK_TRAILER_SIZE > footer:  # TensorFlow never reads it; bounds only
        raise DecodeError(f"metaindex block [{meta_offset}, {meta_offset + meta_size}) lies outside the table data")
    _checked_block(buf, index_offset, index_size, footer, "index", True)

    entries: List[Tuple[bytes, int, int]] = []
    last_key: Optional[bytes] = None
    data_limit = 0  # data blocks must follow each other in the file
    for _sep, start, end in _block_entries(buf, index_offset, index_size, "index"):
        block_offset, block_size, used = _read_handle(buf, start, end)
        if used != end:
            raise DecodeError(f"index entry at offset {start} has {end - used} trailing bytes after its block handle")
        if block_offset < data_limit:
            raise DecodeError(f"data block at offset {block_offset} overlaps or precedes the previous block")
        _checked_block(buf, block_offset, block_size, footer, "data", verify_checksums)
        data_limit = block_offset + block_size + BLOCK_TRAILER_SIZE
        for key, vstart, vend in _block_entries(buf, block_offset, block_size, "data"):
            if last_key is not None and key <= last_key:
                raise DecodeError(
                    f"table keys out of order or duplicated: {key[:80]!r} after {last_key[:80]!r}"
                )
            entries.append((key, vstart, vend))
            last_key = key
    return entries


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """LevelDB BytewiseComparator::FindShortestSeparator."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i < n and start[i] < 0xFF and start[i] + 1 < limit[i]:
        return start[:i] + bytes((start[i] + 1,))
    return start


def _short_successor(key: bytes) -> bytes:
    """LevelDB BytewiseComparator::FindShortSuccessor."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes((byte + 1,))
    return key


class _BlockBuilder:
    """LevelDB BlockBuilder: prefix-compressed entries, restart array, restart count."""

    def __init__(self, restart_interval: int) -> None:
        self.restart_interval = restart_interval
        self.buffer = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.restart_interval:
            n = min(len(self.last_key), len(key))
            while shared < n and self.last_key[shared] == key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.counter = 0
        rest = key[shared:]
        self.buffer += encode_varint(shared) + encode_varint(len(rest)) + encode_varint(len(value))
        self.buffer += rest + value
        self.last_key = key
        self.counter += 1

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        return bytes(self.buffer) + struct.pack(f"<{len(self.restarts)}I", *self.restarts) + _U32.pack(
            len(self.restarts)
        )


def encode_table(
    items: Iterable[Tuple[bytes, bytes]], *, block_size: int = 262144, restart_interval: int = 16
) -> bytes:
    """Serialize sorted ``(key, value)`` pairs as an uncompressed LevelDB table.

    Mirrors TensorFlow's ``table::TableBuilder`` with ``kNoCompression`` and its
    default options (256 KiB blocks, restart interval 16 for data blocks, 1 for
    the index block), so the output is byte-identical to TensorFlow's.
    Keys must be strictly increasing (checked).
    """
    out = bytearray()
    index = _BlockBuilder(1)

    def write_block(block: _BlockBuilder) -> bytes:
        contents = block.finish()
        handle = encode_varint(len(out)) + encode_varint(len(contents))
        crc = mask_crc(google_crc32c.extend(google_crc32c.value(contents), b"\x00"))
        out.extend(contents + b"\x00" + _U32.pack(crc))
        return handle

    data = _BlockBuilder(restart_interval)
    last_key = b""
    started = False
    pending: Optional[bytes] = None  # handle of the last flushed data block, awaiting its index key
    for key, value in items:
        if started and key <= last_key:
            raise ValueError(f"table keys must be strictly increasing: {key!r} after {last_key!r}")
        if pending is not None:
            index.add(_shortest_separator(last_key, key), pending)
            pending = None
        data.add(key, value)
        last_key, started = key, True
        if data.size_estimate() >= block_size:
            pending = write_block(data)
            data = _BlockBuilder(restart_interval)
    if data.buffer:
        pending = write_block(data)
    meta_handle = write_block(_BlockBuilder(restart_interval))
    if pending is not None:
        index.add(_short_successor(last_key), pending)
    index_handle = write_block(index)
    footer = (meta_handle + index_handle).ljust(2 * _MAX_HANDLE_BYTES, b"\x00")
    out += footer + _U64.pack(TABLE_MAGIC)
    return bytes(out)
