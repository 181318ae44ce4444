"""Read TensorFlow's V1 checkpoint format (one file, e.g. TF-slim's ``inception_v1.ckpt``).

A V1 checkpoint is a LevelDB table. Its empty key ``""`` holds a
``SavedTensorSlices`` whose ``meta`` lists every tensor (name, shape, dtype,
saved slices); every other key holds a ``SavedTensorSlices`` whose ``data``
is one ``SavedSlice`` (tensor name, slice, ``TensorProto`` with the values).
Only tensors saved as one full slice are readable; partitioned variables are
listed but raise on :meth:`V1Checkpoint.read`.

Values come from ``tensor_content`` or from the typed repeated fields
(``float_val``, ``int_val``, ``half_val``, ...; packed or not). A single packed
run of float/double values or a ``tensor_content`` is returned as a zero-copy
view of the memory-mapped file; other encodings are decoded into new arrays.
Used through :class:`i3d_convert.io.checkpoint_reader.CheckpointReader`.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from i3d_convert.io import protowire as wire
from i3d_convert.errors import CheckpointFormatError
from i3d_convert.io.bundle_format import (
    DTYPES,
    TensorEntry,
    check_readable,
    close_mapping,
    decoding,
    dtype_of,
    open_mapping,
    parse_shape,
    parse_version,
)

Span = Tuple[int, int]

# TensorProto field holding each dtype's values when tensor_content is not used.
_FLOAT_VAL, _DOUBLE_VAL, _INT_VAL, _STRING_VAL, _SCOMPLEX_VAL = 5, 6, 7, 8, 9
_INT64_VAL, _BOOL_VAL, _DCOMPLEX_VAL, _HALF_VAL, _UINT32_VAL, _UINT64_VAL = 10, 11, 12, 13, 16, 17
_VALUE_FIELD = {
    "float32": _FLOAT_VAL,
    "float64": _DOUBLE_VAL,
    "int32": _INT_VAL,
    "int16": _INT_VAL,
    "int8": _INT_VAL,
    "uint8": _INT_VAL,
    "uint16": _INT_VAL,
    "string": _STRING_VAL,
    "complex64": _SCOMPLEX_VAL,
    "int64": _INT64_VAL,
    "bool": _BOOL_VAL,
    "complex128": _DCOMPLEX_VAL,
    "float16": _HALF_VAL,
    "bfloat16": _HALF_VAL,
    "uint32": _UINT32_VAL,
    "uint64": _UINT64_VAL,
}
_FIXED_WIDTH = {_FLOAT_VAL: (4, "<u4"), _DOUBLE_VAL: (8, "<u8"), _SCOMPLEX_VAL: (4, "<u4"), _DCOMPLEX_VAL: (8, "<u8")}
_VALUE_FIELDS = frozenset(_VALUE_FIELD.values())


class V1Checkpoint:
    """A V1 checkpoint file, memory-mapped; same interface as the V2 bundle backend."""

    format = "V1"

    def __init__(self, path: Path, *, verify_crc: bool = True) -> None:
        self.path = self.index_path = path
        self.data_paths: Tuple[Path, ...] = (path,)
        self._buf: Optional[Union[mmap.mmap, bytes]] = open_mapping(path, "checkpoint file")
        self._size = len(self._buf)
        self._data: Dict[str, Span] = {}
        try:
            if not self._buf:
                raise CheckpointFormatError("checkpoint file is empty", path)
            if not _looks_like_table(self._buf):
                raise CheckpointFormatError(
                    "not a TensorFlow checkpoint (no .index file beside it, and no table magic number at its end)",
                    path,
                )
            with decoding(path):
                table = wire.read_table(self._buf, verify_checksums=verify_crc)
                self.header, self.entries = self._parse(self._buf, table)
        except BaseException:
            self.close()
            raise

    def _parse(
        self, buf: Union[mmap.mmap, bytes], table: List[Tuple[bytes, int, int]]
    ) -> Tuple[Dict[str, object], Dict[str, TensorEntry]]:
        if not table or table[0][0] != b"":
            raise wire.DecodeError("table has no header entry (not a V1 checkpoint)")
        meta = _submessage(buf, table[0][1], table[0][2], 1, "SavedTensorSlices")
        if meta is None:
            raise wire.DecodeError("header entry holds no SavedTensorSliceMeta (not a V1 checkpoint)")
        version = parse_version(buf, 0, 0)
        metas: Dict[str, Tuple[TensorEntry, bool]] = {}
        for field in wire.iter_fields(buf, *meta):
            if field.number == 1:
                entry, full = _parse_slice_meta(buf, *field.span("SavedTensorSliceMeta"))
                if entry.name in metas:
                    raise wire.DecodeError(f"tensor {entry.name!r} is listed twice (duplicate name)")
                metas[entry.name] = (entry, full)
            elif field.number == 2:
                version = parse_version(buf, *field.span("SavedTensorSliceMeta"))

        for key, start, end in table[1:]:
            data = _submessage(buf, start, end, 2, "SavedTensorSlices")
            if data is None:
                raise wire.DecodeError(f"table entry {key[:60]!r} holds no tensor data")
            name, slice_span, proto = _parse_saved_slice(buf, *data)
            known = metas.get(name)
            if known is None:
                raise wire.DecodeError(f"table holds data for tensor {name!r}, which the header does not list")
            entry, full = known
            if not full:
                continue  # a slice of a partitioned variable: not readable, not checked further
            if not _is_full_slice(buf, slice_span, entry.shape):
                raise wire.DecodeError(f"tensor {name!r}: stored slice differs from the full slice in the header")
            if name in self._data:
                raise wire.DecodeError(f"tensor {name!r} has its data stored twice (duplicate)")
            self._data[name] = proto
            metas[name] = (
                TensorEntry(
                    name, entry.dtype, entry.shape, 0, proto[0], entry.size, None, entry.dtype_name, entry.num_slices
                ),
                True,
            )
        header = {"format": "V1", "num_shards": 1, "endianness": 0, "version": version}
        return header, {name: metas[name][0] for name in sorted(metas)}

    def read(self, entry: TensorEntry) -> np.ndarray:
        dtype = check_readable(entry, self.path)
        span = self._data.get(entry.name)
        if span is None:
            raise CheckpointFormatError(f"tensor {entry.name!r} has no data stored in the checkpoint", self.path)
        if self._buf is None:  # closed: map the file again
            self._buf = open_mapping(self.path, "checkpoint file")
            if len(self._buf) != self._size:
                raise CheckpointFormatError("checkpoint file changed size since it was opened", self.path)
        with decoding(self.path, f"tensor {entry.name!r}: "):
            array = _decode_tensor_proto(self._buf, span, entry, dtype)
        if array.flags.writeable:
            array.flags.writeable = False
        return array.reshape(entry.shape)

    def close(self) -> None:
        buf, self._buf = self._buf, None
        if buf is not None:
            close_mapping(buf)


def _looks_like_table(buf: Union[mmap.mmap, bytes]) -> bool:
    return len(buf) >= wire.FOOTER_SIZE and int.from_bytes(buf[-8:], "little") == wire.TABLE_MAGIC


def _submessage(buf: wire.Buffer, start: int, end: int, number: int, message: str) -> Optional[Span]:
    """Span of the last occurrence of length-delimited field ``number`` (None if absent)."""
    found = None
    for field in wire.iter_fields(buf, start, end):
        if field.number == number:
            found = field.span(message)
    return found


def _parse_slice_meta(buf: wire.Buffer, start: int, end: int) -> Tuple[TensorEntry, bool]:
    """``SavedSliceMeta`` -> (entry, whether it was saved as exactly one full slice)."""
    name_span: Optional[Span] = None
    shape_spans: List[Span] = []
    dtype_num = 0
    slices: List[Span] = []
    message = "SavedSliceMeta"
    for field in wire.iter_fields(buf, start, end):
        if field.number == 1:
            name_span = field.span(message)
        elif field.number == 2:
            shape_spans.append(field.span(message))
        elif field.number == 3:
            dtype_num = wire.to_int32(field.varint(message))
        elif field.number == 4:
            slices.append(field.span(message))
    name = wire.decode_utf8(bytes(buf[name_span[0] : name_span[1]]) if name_span else b"", "tensor name")
    if not name:
        raise wire.DecodeError("header lists a tensor with an empty name")
    what = f"tensor {name!r}"
    dtype = dtype_of(dtype_num, what)
    shape = parse_shape(buf, shape_spans, what)
    full = len(slices) == 1 and _is_full_slice(buf, slices[0], shape)
    numel = 1
    for d in shape:
        numel *= d
    entry = TensorEntry(
        name, dtype.numpy if dtype.numpy is not None else np.dtype(object), shape, 0, 0,
        numel * dtype.itemsize, None, dtype.name, 0 if full else max(len(slices), 1),
    )
    return entry, full


def _is_full_slice(buf: wire.Buffer, span: Span, shape: Tuple[int, ...]) -> bool:
    """Whether a ``TensorSliceProto`` covers the whole tensor (no extents, or every extent full)."""
    extents: List[Tuple[int, Optional[int]]] = []
    for field in wire.iter_fields(buf, *span):
        if field.number == 1:
            start: int = 0
            length: Optional[int] = None
            for part in wire.iter_fields(buf, *field.span("TensorSliceProto")):
                if part.number == 1:
                    start = wire.to_int64(part.varint("TensorSliceProto.Extent"))
                elif part.number == 2:
                    length = wire.to_int64(part.varint("TensorSliceProto.Extent"))
            extents.append((start, length))
            if len(extents) > len(shape):
                return False
    if not extents:
        return True
    return len(extents) == len(shape) and all(
        start == 0 and length in (None, dim) for (start, length), dim in zip(extents, shape)  # noqa: B905
    )


def _parse_saved_slice(buf: wire.Buffer, start: int, end: int) -> Tuple[str, Span, Span]:
    """``SavedSlice`` -> (tensor name, slice span, TensorProto span)."""
    name = b""
    slice_span: Span = (start, start)
    proto: Span = (start, start)
    for field in wire.iter_fields(buf, start, end):
        if field.number == 1:
            name_start, name_end = field.span("SavedSlice")
            name = bytes(buf[name_start:name_end])
        elif field.number == 2:
            slice_span = field.span("SavedSlice")
        elif field.number == 3:
            proto = field.span("SavedSlice")
    return wire.decode_utf8(name, "tensor name"), slice_span, proto


def _decode_tensor_proto(
    buf: Union[mmap.mmap, bytes], span: Span, entry: TensorEntry, dtype: np.dtype
) -> np.ndarray:
    """The values of a ``TensorProto`` as a flat array of ``dtype`` with exactly ``entry.numel`` elements."""
    expected_field = _VALUE_FIELD[entry.dtype_name]
    content: Optional[Span] = None
    parts: List[wire.Field] = []  # occurrences of the expected value field, in order
    for field in wire.iter_fields(buf, *span):
        if field.number == 1:
            stored = wire.to_int32(field.varint("TensorProto"))
            if stored and (stored not in DTYPES or DTYPES[stored].name != entry.dtype_name):
                raise wire.DecodeError(f"value has dtype {stored}, but the header says {entry.dtype_name}")
        elif field.number == 2:
            shape = parse_shape(buf, [field.span("TensorProto")], "value")
            if shape and shape != entry.shape:
                raise wire.DecodeError(f"value has shape {list(shape)}, but the header says {list(entry.shape)}")
        elif field.number == 4:
            content = field.span("TensorProto")
        elif field.number == expected_field:
            parts.append(field)
        elif field.number in _VALUE_FIELDS:
            raise wire.DecodeError(
                f"value holds TensorProto field {field.number}, which does not fit {entry.dtype_name}"
            )
    numel = entry.numel
    if content is not None and content[1] > content[0]:
        if parts:
            raise wire.DecodeError("value has both tensor_content and typed values")
        if entry.dtype_name == "string":
            raise wire.DecodeError("string value stored as tensor_content")
        if content[1] - content[0] != numel * dtype.itemsize:
            raise wire.DecodeError(
                f"tensor_content has {content[1] - content[0]} bytes, the shape needs {numel * dtype.itemsize} "
                "(size mismatch)"
            )
        return np.frombuffer(buf, dtype=dtype, count=numel, offset=content[0])
    if expected_field == _STRING_VAL:
        values = _strings(buf, parts)
    elif expected_field in _FIXED_WIDTH:
        values = _fixed_values(buf, parts, expected_field, dtype)
    else:
        values = _varint_values(buf, parts, entry.dtype_name, dtype)
    if values.size != numel:
        raise wire.DecodeError(f"value holds {values.size} elements, shape {list(entry.shape)} needs {numel}")
    return values


def _fixed_values(buf: wire.Buffer, parts: List[wire.Field], number: int, dtype: np.dtype) -> np.ndarray:
    width, bits = _FIXED_WIDTH[number]
    single = wire.WIRE_FIXED32 if width == 4 else wire.WIRE_FIXED64
    chunks: List[np.ndarray] = []
    for field in parts:
        if field.wire == wire.WIRE_LEN:
            if field.value % width:
                raise wire.DecodeError(f"packed field {number} has {field.value} bytes, not a multiple of {width}")
            chunks.append(np.frombuffer(buf, dtype=bits, count=field.value // width, offset=field.start))
        elif field.wire == single:
            chunks.append(np.array([field.value], dtype=bits))
        else:
            raise wire.DecodeError(f"TensorProto field {number} has wire type {field.wire}")
    raw = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.zeros(0, bits)
    if raw.nbytes % dtype.itemsize:
        raise wire.DecodeError(f"complex value has an odd number ({raw.size}) of real parts")
    return raw.view(dtype)  # complex: pairs of floats view as one complex each


def _varint_values(buf: wire.Buffer, parts: List[wire.Field], name: str, dtype: np.dtype) -> np.ndarray:
    chunks: List[np.ndarray] = []
    for field in parts:
        if field.wire == wire.WIRE_LEN:
            chunks.append(wire.decode_packed_varints(buf, field.start, field.end))
        else:
            chunks.append(np.array([field.varint("TensorProto")], dtype=np.uint64))
    raw = np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)
    if name == "bool":
        return raw != 0
    if name == "int64":
        return raw.view(np.int64)
    if name == "uint64":
        return raw
    if name in ("float16", "bfloat16"):
        return (raw & np.uint64(0xFFFF)).astype(np.uint16).view(dtype)
    low = (raw & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    if name == "uint32":
        return low
    return low.view(np.int32).astype(dtype)  # int32 and narrower: C++ static_cast semantics


def _strings(buf: wire.Buffer, parts: List[wire.Field]) -> np.ndarray:
    out = np.empty(len(parts), dtype=object)
    for i, field in enumerate(parts):
        start, end = field.span("TensorProto")
        out[i] = bytes(buf[start:end])
    return out

