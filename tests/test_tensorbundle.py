"""The TensorFlow-free checkpoint reader and writer (``i3d_convert.io``: bundle_v2, tf_v1_checkpoint, bundle_writer, checkpoint_reader).

Ground truth is TensorFlow itself: checkpoints written by ``tf.raw_ops.SaveV2``,
``MergeV2Checkpoints``, ``tf.train.Checkpoint`` and the V1 ``Saver`` must read
back bit-identically to ``tf.train.load_checkpoint``, and what our writer
writes must be what TensorFlow writes, byte for byte. TensorFlow is imported
inside the tests (after torch, which conftest imports first).
"""

from __future__ import annotations

import logging
import shutil
import time
import tracemalloc
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import pytest

from i3d_convert.io import protowire as wire
from i3d_convert.errors import CheckpointFormatError, ChecksumError, I3DConvertError
from i3d_convert.io.bundle_format import TensorEntry, TensorNotFoundError, masked_crc32c
from i3d_convert.io.bundle_writer import entry_proto as encode_entry_proto
from i3d_convert.io.bundle_writer import write_checkpoint
from i3d_convert.io.checkpoint_reader import CheckpointReader, list_variables, load_tf_checkpoint

from conftest import SHARED_FIXTURES

REPO_ROOT = Path(__file__).resolve().parents[1]
VENDORED_INDEX = REPO_ROOT / "i3d_convert" / "data" / "index"
SHARED = SHARED_FIXTURES  # ../shared/fixtures beside the clone, or $I3D_SHARED_FIXTURES
RELEASE_SIZES = {
    "rgb_imagenet": 230,
    "rgb_scratch": 230,
    "flow_imagenet": 230,
    "flow_scratch": 230,
    "rgb_scratch_kin600": 346,
}
DATA = ".data-00000-of-00001"


def tf_module():
    import tensorflow as tf  # lazily: torch must be imported first (conftest does)

    return tf


def save_v2(prefix: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` with TensorFlow's own SaveV2 kernel, names in sorted order."""
    tf = tf_module()
    names = sorted(arrays)
    tf.raw_ops.SaveV2(
        prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
        tensors=[tf.constant(arrays[n]) for n in names],
    )
    return prefix


def tf_read_all(prefix: Path, names: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    """``tf.train.load_checkpoint(prefix).get_tensor`` of every (or each named) tensor."""
    tf = tf_module()
    reader = tf.train.load_checkpoint(str(prefix))
    out = {}
    for name in reader.get_variable_to_shape_map() if names is None else names:
        value = reader.get_tensor(name)
        out[name] = np.array(value, dtype=object) if isinstance(value, bytes) else np.asarray(value)
    return out


def assert_bit_identical(ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray]) -> None:
    assert sorted(ours) == sorted(theirs)
    for name, expected in theirs.items():
        got = ours[name]
        assert got.dtype == expected.dtype, name
        assert got.shape == expected.shape, name
        if expected.dtype == object:
            assert got.tolist() == expected.tolist(), name
        else:
            assert got.tobytes() == expected.tobytes(), name


def mixed_arrays(seed: int = 0) -> Dict[str, np.ndarray]:
    """One tensor per readable numeric dtype, plus scalars and empty tensors."""
    import ml_dtypes

    rng = np.random.default_rng(seed)
    out: Dict[str, np.ndarray] = {
        "f16": rng.standard_normal((3, 5)).astype(np.float16),
        "f32": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "f64": rng.standard_normal(7),
        "bf16": rng.standard_normal(6).astype(ml_dtypes.bfloat16),
        "c64": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
        "c128": rng.standard_normal(2) + 1j * rng.standard_normal(2),
        "bool": rng.random((4, 2)) > 0.5,
        "scalar/f32": np.array(3.25, np.float32),
        "scalar/i64": np.array(-(2**40), np.int64),
        "empty/f32": np.zeros((0, 3), np.float32),
        "empty/i8": np.zeros((2, 0, 1), np.int8),
    }
    for dtype in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size=5, dtype=dtype, endpoint=True)
        values[:2] = (info.min, info.max)
        out[np.dtype(dtype).name] = values
    return out


def with_block_crcs_fixed(index: bytes) -> bytes:
    """Recompute the crc32c of the index block and every data block of a (modified) table."""
    buf = bytearray(index)
    footer = len(buf) - wire.FOOTER_SIZE
    _, _, pos = wire._read_handle(buf, footer, footer + 40)
    index_offset, index_size, _ = wire._read_handle(buf, pos, footer + 40)

    def fix(offset: int, size: int) -> None:
        crc = wire.mask_crc(wire.crc32c(bytes(buf[offset : offset + size + 1])))
        buf[offset + size + 1 : offset + size + 5] = crc.to_bytes(4, "little")

    for _, start, end in wire._block_entries(bytes(buf), index_offset, index_size, "index"):
        offset, size, _ = wire._read_handle(buf, start, end)
        fix(offset, size)
    fix(index_offset, index_size)
    return bytes(buf)


def entry_proto(dtype: int, shape: Tuple[int, ...], offset: int = 0, size: int = 0, crc: int = 0) -> bytes:
    """A ``BundleEntryProto`` as TensorFlow serializes it."""
    return encode_entry_proto(dtype, shape, offset, size, crc)


def header_proto(num_shards: int = 1, endianness: int = 0) -> bytes:
    out = wire.field_varint(1, num_shards)
    if endianness:
        out += wire.field_varint(2, endianness)
    return out + wire.field_bytes(3, wire.field_varint(1, 1))


def write_raw_bundle(
    prefix: Path, entries: List[Tuple[Union[str, bytes], bytes]], data: bytes = b"", header: bytes = b""
) -> Path:
    """A syntactically valid table holding hand-made (possibly invalid) protos; names may be raw bytes."""
    items = [(b"", header or header_proto())]
    items += [(name if isinstance(name, bytes) else name.encode(), proto) for name, proto in entries]
    Path(f"{prefix}.index").write_bytes(wire.encode_table(items))
    Path(f"{prefix}{DATA}").write_bytes(data)
    return prefix


def assert_format_error(excinfo: pytest.ExceptionInfo, path: Path, *phrases: str) -> None:
    err = excinfo.value
    assert isinstance(err, CheckpointFormatError)
    message = str(err)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, message


@pytest.fixture
def small_prefix(tmp_path: Path) -> Path:
    arrays = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.array([1, -2, 3], np.int64),
        "c": np.array(7.5, np.float64),
    }
    write_checkpoint(tmp_path / "model.ckpt", arrays)
    return tmp_path / "model.ckpt"


# --------------------------------------------------------------------------- the real released index files


def test_vendored_index_files_are_byte_identical_to_the_shared_fixtures() -> None:
    checkpoints = SHARED / "kinetics-i3d" / "checkpoints"
    if not checkpoints.exists():
        pytest.skip(f"shared fixtures absent at {checkpoints}")
    for release in RELEASE_SIZES:
        vendored = (VENDORED_INDEX / f"{release}.index").read_bytes()
        assert vendored == (checkpoints / release / "model.ckpt.index").read_bytes(), release
    license_text = (REPO_ROOT / "i3d_convert" / "data" / "LICENSE-kinetics-i3d").read_bytes()
    assert license_text == (SHARED / "kinetics-i3d" / "LICENSE").read_bytes()


@pytest.mark.parametrize("release", sorted(RELEASE_SIZES))
def test_reader_lists_the_real_index_exactly_like_tensorflow(release: str) -> None:
    tf = tf_module()
    index = VENDORED_INDEX / f"{release}.index"
    prefix = str(index)[: -len(".index")]
    ours = list_variables(index)
    assert len(ours) == RELEASE_SIZES[release]
    reference = tf.train.load_checkpoint(prefix)
    dtypes = reference.get_variable_to_dtype_map()
    expected = [(name, dtypes[name].name, tuple(shape)) for name, shape in tf.train.list_variables(prefix)]
    assert ours == expected
    assert [name for name, _, _ in ours] == sorted(name for name, _, _ in ours)


@pytest.mark.parametrize("release", sorted(RELEASE_SIZES))
def test_real_index_describes_float32_tensors_back_to_back_in_one_shard(release: str) -> None:
    with CheckpointReader(VENDORED_INDEX / f"{release}.index") as reader:
        assert reader.format == "V2"
        assert reader.header["num_shards"] == 1 and reader.header["endianness"] == 0
        assert reader.header["version"]["producer"] == 1  # type: ignore[index]
        offset = 0
        for entry in reader.entries.values():  # sorted by name == file order
            assert entry.dtype == np.float32 and entry.shard_id == 0 and entry.num_slices == 0
            assert entry.offset == offset and entry.size == 4 * entry.numel
            assert entry.crc32c is not None
            offset += entry.size
        assert reader.data_paths == (Path(f"{VENDORED_INDEX / release}{DATA}"),)


def test_reading_a_tensor_whose_data_file_is_absent_says_data_file_not_found() -> None:
    with CheckpointReader(VENDORED_INDEX / "rgb_imagenet.index") as reader:
        name = reader.keys()[0]
        with pytest.raises(CheckpointFormatError) as excinfo:
            reader.read(name)
    assert_format_error(excinfo, Path(f"{VENDORED_INDEX / 'rgb_imagenet'}{DATA}"), "data file not found")


# --------------------------------------------------------------------------- checkpoints written by TensorFlow


@pytest.fixture(scope="module", params=sorted(RELEASE_SIZES))
def tf_release_checkpoint(request, tmp_path_factory) -> Tuple[str, Path, Dict[str, np.ndarray]]:
    """A SaveV2 checkpoint with one release's real names and shapes, seeded random float32 values."""
    release = request.param
    rng = np.random.default_rng(sorted(RELEASE_SIZES).index(release))
    arrays = {
        name: rng.standard_normal(shape, dtype=np.float32)
        for name, _, shape in list_variables(VENDORED_INDEX / f"{release}.index")
    }
    directory = tmp_path_factory.mktemp(f"tf-{release}")
    prefix = save_v2(directory / "model.ckpt", arrays)
    yield release, prefix, arrays
    shutil.rmtree(directory, ignore_errors=True)


def test_reader_is_bit_identical_to_tensorflow_on_savev2_checkpoints_with_real_names(tf_release_checkpoint) -> None:
    release, prefix, arrays = tf_release_checkpoint
    expected = tf_read_all(prefix)
    start = time.process_time()
    ours = load_tf_checkpoint(prefix)  # crc32c of every tensor verified
    cpu_seconds = time.process_time() - start
    assert_bit_identical(ours, expected)
    assert_bit_identical(ours, arrays)
    # A complexity guard in CPU time with a wide margin (typically ~0.02 s for 50 MB); speed is bench/'s.
    assert cpu_seconds < 20.0, f"reading {release} took {cpu_seconds:.3f} s of CPU"
    for array in ours.values():
        assert not array.flags.writeable


def test_writer_output_is_byte_identical_to_tensorflow_savev2(tf_release_checkpoint, tmp_path: Path) -> None:
    release, prefix, arrays = tf_release_checkpoint
    write_checkpoint(tmp_path / "ours", arrays)
    assert (tmp_path / "ours.index").read_bytes() == Path(f"{prefix}.index").read_bytes()
    assert (tmp_path / f"ours{DATA}").read_bytes() == Path(f"{prefix}{DATA}").read_bytes()


def test_writer_lays_out_tensors_exactly_like_the_released_checkpoint(tf_release_checkpoint, tmp_path: Path) -> None:
    release, _, arrays = tf_release_checkpoint
    write_checkpoint(tmp_path / "ours", arrays)
    with CheckpointReader(tmp_path / "ours") as ours, CheckpointReader(VENDORED_INDEX / f"{release}.index") as real:
        strip = lambda e: (e.name, e.dtype, e.shape, e.shard_id, e.offset, e.size)  # noqa: E731 (crc differs)
        assert [strip(e) for e in ours.entries.values()] == [strip(e) for e in real.entries.values()]


def test_reader_is_bit_identical_to_tensorflow_on_mixed_dtypes_scalars_empty_and_strings(tmp_path: Path) -> None:
    arrays = mixed_arrays()
    arrays["text"] = np.array([b"", b"hello", bytes(range(256)) * 3], dtype=object)
    prefix = save_v2(tmp_path / "mixed", arrays)
    expected = tf_read_all(prefix)
    with CheckpointReader(prefix) as reader:
        ours = {name: reader.read(name) for name in reader.keys()}
        assert reader.entries["bf16"].dtype_name == "bfloat16"
        assert reader.entries["text"].dtype_name == "string" and not reader.entries["text"].numeric
    assert_bit_identical(ours, expected)
    numeric = load_tf_checkpoint(prefix)
    assert sorted(numeric) == sorted(set(arrays) - {"text"})


def test_reader_reads_a_two_shard_checkpoint_made_by_merge_v2_checkpoints(tmp_path: Path) -> None:
    tf = tf_module()
    arrays = mixed_arrays(1)
    names = sorted(arrays)
    part_a = save_v2(tmp_path / "tmp" / "part-0", {n: arrays[n] for n in names[::2]})
    part_b = save_v2(tmp_path / "tmp" / "part-1", {n: arrays[n] for n in names[1::2]})
    tf.raw_ops.MergeV2Checkpoints(
        checkpoint_prefixes=[str(part_a), str(part_b)], destination_prefix=str(tmp_path / "merged"),
        delete_old_dirs=True,
    )
    with CheckpointReader(tmp_path / "merged") as reader:
        assert reader.header["num_shards"] == 2
        assert {e.shard_id for e in reader.entries.values()} == {0, 1}
        assert reader.data_paths == tuple(Path(f"{tmp_path}/merged.data-0000{i}-of-00002") for i in range(2))
        ours = {name: reader.read(name) for name in reader.keys()}
    assert_bit_identical(ours, tf_read_all(tmp_path / "merged"))
    assert_bit_identical(ours, arrays)


def test_tf2_object_checkpoint_lists_the_object_graph_and_load_skips_it(tmp_path: Path, caplog) -> None:
    tf = tf_module()
    ckpt = tf.train.Checkpoint(w=tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3)), step=tf.Variable(3))
    prefix = ckpt.write(str(tmp_path / "obj"))
    names = [name for name, _, _ in list_variables(prefix)]
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in names
    with caplog.at_level(logging.INFO, logger="i3d_convert.io.checkpoint_reader"):
        loaded = load_tf_checkpoint(prefix)
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" not in loaded
    assert "skipped non-numeric tensors: _CHECKPOINTABLE_OBJECT_GRAPH (string)" in caplog.text
    assert_bit_identical(loaded, {k: v for k, v in tf_read_all(Path(prefix)).items() if v.dtype != object})
    with CheckpointReader(prefix) as reader:  # the object graph itself reads as TF returns it
        graph = reader.read("_CHECKPOINTABLE_OBJECT_GRAPH")
    assert graph.shape == () and graph.item() == tf_read_all(Path(prefix))["_CHECKPOINTABLE_OBJECT_GRAPH"].item()


def test_partitioned_variable_is_listed_like_tensorflow_but_reading_it_says_not_supported(tmp_path: Path) -> None:
    tf = tf_module()
    prefix = tmp_path / "part"
    tf.raw_ops.SaveV2(
        prefix=str(prefix), tensor_names=["x", "x", "y"], shape_and_slices=["4 0,2", "4 2,2", ""],
        tensors=[tf.constant([1.0, 2.0]), tf.constant([3.0, 4.0]), tf.constant(5)],
    )
    assert list_variables(prefix) == [("x", "float32", (4,)), ("y", "int32", ())]
    assert [(n, tuple(s)) for n, s in tf.train.list_variables(str(prefix))] == [("x", (4,)), ("y", ())]
    with CheckpointReader(prefix) as reader:
        assert reader.read("y") == 5
        with pytest.raises(CheckpointFormatError) as excinfo:
            reader.read("x")
    assert_format_error(excinfo, Path(f"{prefix}.index"), "'x'", "partitioned variables are not supported")
    with pytest.raises(CheckpointFormatError):
        load_tf_checkpoint(prefix)


# --------------------------------------------------------------------------- the writer


def test_writer_output_is_read_by_tensorflow_with_identical_names_dtypes_shapes_values(tmp_path: Path) -> None:
    tf = tf_module()
    arrays = mixed_arrays(2)
    arrays["non_contiguous"] = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    arrays["big_endian"] = np.arange(5, dtype=">i4")
    arrays["fortran"] = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    arrays["unicode/ñame"] = np.array([1.0], np.float32)
    write_checkpoint(tmp_path / "w", arrays)
    reference = tf.train.load_checkpoint(str(tmp_path / "w"))
    shapes = reference.get_variable_to_shape_map()
    dtypes = reference.get_variable_to_dtype_map()
    assert sorted(shapes) == sorted(arrays)
    for name, array in arrays.items():
        expected = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("="))
        assert tuple(shapes[name]) == array.shape, name
        assert dtypes[name].as_numpy_dtype == expected.dtype, name
        got = reference.get_tensor(name)
        assert np.asarray(got).tobytes() == expected.tobytes(), name
    ours = load_tf_checkpoint(tmp_path / "w")
    assert_bit_identical(ours, tf_read_all(tmp_path / "w"))


def test_writer_round_trip_is_bit_identical_including_nan_payloads(tmp_path: Path) -> None:
    arrays = mixed_arrays(3)
    arrays["nan"] = np.array([np.nan, -np.nan, np.inf, -0.0], np.float32)
    arrays["nan"].view(np.uint32)[0] = 0x7FC12345  # a NaN payload survives bit for bit
    write_checkpoint(tmp_path / "rt", arrays)
    assert_bit_identical(load_tf_checkpoint(tmp_path / "rt"), arrays)
    assert list_variables(tmp_path / "rt") == sorted(
        (name, "bfloat16" if name == "bf16" else a.dtype.name, a.shape) for name, a in arrays.items()
    )


def test_writer_spanning_several_index_blocks_matches_tensorflow_byte_for_byte(tmp_path: Path) -> None:
    arrays = {f"layer_{i:05d}/" + "x" * 60: np.array(i, np.float32) for i in range(3500)}
    save_v2(tmp_path / "tf", arrays)
    write_checkpoint(tmp_path / "ours", arrays)
    ours = (tmp_path / "ours.index").read_bytes()
    assert len(ours) > 262144  # more than one 256 KiB block
    assert ours == (tmp_path / "tf.index").read_bytes()
    assert (tmp_path / f"ours{DATA}").read_bytes() == (tmp_path / f"tf{DATA}").read_bytes()
    assert len(CheckpointReader(tmp_path / "ours").entries) == 3500


def test_writer_replaces_files_atomically_and_removes_temporaries_on_interrupt(tmp_path: Path, monkeypatch) -> None:
    write_checkpoint(tmp_path / "m", {"old": np.zeros(2, np.float32)})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wire, "encode_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path / "m", {"new": np.ones(3, np.float32)})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old checkpoint intact, no temporaries
    monkeypatch.undo()
    write_checkpoint(tmp_path / "m", {"new": np.ones(3, np.float32)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.data-00000-of-00001", "m.index"]
    assert list(load_tf_checkpoint(tmp_path / "m")) == ["new"]


@pytest.mark.parametrize(
    "arrays, phrase",
    [
        ({"": np.zeros(1)}, "invalid tensor name"),
        ({"\x00slice": np.zeros(1)}, "invalid tensor name"),
        ({"s": np.array(["text"])}, "unsupported dtype"),
        ({"o": np.array([object()])}, "unsupported dtype"),
    ],
)
def test_writer_rejects_bad_names_and_dtypes_without_writing(tmp_path: Path, arrays, phrase: str) -> None:
    with pytest.raises(I3DConvertError) as excinfo:
        write_checkpoint(tmp_path / "bad", arrays)
    assert phrase in str(excinfo.value) and str(tmp_path / "bad") in str(excinfo.value)
    assert list(tmp_path.iterdir()) == []


def test_writer_into_a_missing_directory_raises_i3d_convert_error(tmp_path: Path) -> None:
    with pytest.raises(I3DConvertError) as excinfo:
        write_checkpoint(tmp_path / "missing" / "m", {"a": np.zeros(1)})
    assert "cannot write checkpoint" in str(excinfo.value)


def test_masked_crc32c_matches_tensorflow_stored_values(small_prefix: Path) -> None:
    assert masked_crc32c(b"") == 0xA282EAD8  # TensorFlow's crc32c::Mask(0)
    with CheckpointReader(small_prefix) as reader:
        entry = reader.entries["a"]
        raw = Path(f"{small_prefix}{DATA}").read_bytes()[entry.offset : entry.offset + entry.size]
        assert masked_crc32c(raw) == entry.crc32c
        assert masked_crc32c(np.arange(12, dtype=np.float32).reshape(3, 4)) == entry.crc32c
        assert masked_crc32c(memoryview(bytearray(raw))) == entry.crc32c


# --------------------------------------------------------------------------- V1 checkpoints


def save_v1(path: Path, arrays: Mapping[str, np.ndarray], partitioned: Mapping[str, Tuple[int, ...]] = {}) -> Path:
    """Write ``arrays`` (and ones-filled variables split in two along axis 0) with the V1 Saver."""
    tf = tf_module()
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in arrays.items()]
        for name, shape in partitioned.items():
            variables += list(
                tf.compat.v1.get_variable(
                    name, shape=shape, initializer=tf.compat.v1.ones_initializer(),
                    partitioner=tf.compat.v1.fixed_size_partitioner(2),
                )
            )
        saver = tf.compat.v1.train.Saver(variables, write_version=tf.compat.v1.train.SaverDef.V1)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(path), write_meta_graph=False, write_state=False)
    return path


def test_reader_is_bit_identical_to_tensorflow_on_v1_checkpoint_with_slim_inception_v1_names(tmp_path: Path) -> None:
    tsv = SHARED / "inception-v1" / "tf_slim_inception_v1.tsv"
    if not tsv.exists():
        pytest.skip(f"shared fixture absent: {tsv}")
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
    assert len(rows) == 230
    rng = np.random.default_rng(7)
    arrays = {
        name: rng.standard_normal(tuple(int(d) for d in shape.strip("[]").split(",") if d), dtype=np.float32)
        for name, dtype, shape, _ in rows
    }
    path = save_v1(tmp_path / "inception_v1.ckpt", arrays)
    assert not Path(f"{path}.index").exists()
    with CheckpointReader(path) as reader:
        assert reader.format == "V1" and reader.path == path and reader.data_paths == (path,)
        assert len(reader) == 230
        ours = {name: reader.read(name) for name in reader.keys()}
    assert_bit_identical(ours, tf_read_all(path))
    assert_bit_identical(ours, arrays)
    assert list_variables(tmp_path) == sorted((n, "float32", a.shape) for n, a in arrays.items())


def test_v1_reader_reads_every_dtype_the_v1_saver_writes(tmp_path: Path) -> None:
    arrays = {k: v for k, v in mixed_arrays(4).items() if k not in ("bf16", "c128", "uint32", "uint64")}
    arrays["empty/f32"] = np.zeros((0, 3), np.float32)
    path = save_v1(tmp_path / "mixed.ckpt", arrays)
    with CheckpointReader(path) as reader:
        ours = {name: reader.read(name) for name in reader.keys()}
    assert_bit_identical(ours, arrays)
    readable_by_tf = {k: v for k, v in ours.items() if k not in ("f16", "c64", "uint16")}  # TF's V1 reader lacks them
    assert_bit_identical(readable_by_tf, tf_read_all(path, list(readable_by_tf)))


def test_v1_partitioned_variable_is_listed_but_reading_it_says_not_supported(tmp_path: Path) -> None:
    path = save_v1(
        tmp_path / "p.ckpt", {"plain": np.ones(3, np.float32)}, {"part": (4, 2)}
    )
    assert list_variables(path) == [("part", "float32", (4, 2)), ("plain", "float32", (3,))]
    with CheckpointReader(path) as reader:
        assert reader.entries["part"].num_slices == 2
        assert reader.read("plain").tolist() == [1, 1, 1]
        with pytest.raises(CheckpointFormatError) as excinfo:
            reader.read("part")
    assert_format_error(excinfo, path, "'part'", "partitioned variables are not supported")


# --------------------------------------------------------------------------- path resolution


def test_reader_accepts_prefix_index_data_file_and_directory(small_prefix: Path) -> None:
    spellings = [small_prefix, f"{small_prefix}.index", f"{small_prefix}{DATA}", small_prefix.parent]
    for spelling in spellings:
        with CheckpointReader(spelling) as reader:
            assert reader.path == small_prefix and reader.index_path == Path(f"{small_prefix}.index")
            assert reader.keys() == ["a", "b", "c"] and len(reader) == 3 and "b" in reader
            assert reader.read("c") == 7.5


def test_meta_file_and_saved_model_folder_resolve_to_their_checkpoint(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "model.ckpt", {"w": np.ones(2, np.float32)})
    (tmp_path / "model.ckpt.meta").write_bytes(b"a MetaGraphDef")
    assert CheckpointReader(tmp_path / "model.ckpt.meta").path == tmp_path / "model.ckpt"
    saved_model = tmp_path / "hub_module"
    (saved_model / "variables").mkdir(parents=True)
    write_checkpoint(saved_model / "variables" / "variables", {"w": np.zeros(3, np.float32)})
    assert load_tf_checkpoint(saved_model)["w"].tolist() == [0, 0, 0]


def test_directory_with_a_checkpoint_state_file_uses_model_checkpoint_path(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "model.ckpt-100", {"step": np.array(100)})
    write_checkpoint(tmp_path / "model.ckpt-200", {"step": np.array(200)})
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(tmp_path)
    assert_format_error(excinfo, tmp_path, "ambiguous", "model.ckpt-100.index")
    state = tmp_path / "checkpoint"
    state.write_text('model_checkpoint_path: "model.ckpt-200"\nall_model_checkpoint_paths: "model.ckpt-100"\n')
    assert load_tf_checkpoint(tmp_path)["step"] == 200
    # written on another machine: an absolute path that no longer exists falls back to the basename
    state.write_text('model_checkpoint_path: "/elsewhere/train/model.ckpt-100"\n')
    assert load_tf_checkpoint(tmp_path)["step"] == 100
    state.write_text('model_checkpoint_path: "model.ckpt-300"\n')
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(tmp_path)
    assert_format_error(excinfo, state, "model.ckpt-300", "not found")


def test_tensorflow_state_file_written_by_checkpoint_manager_is_followed(tmp_path: Path) -> None:
    tf = tf_module()
    ckpt = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0]))
    manager = tf.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=3)
    manager.save()
    ckpt.v.assign([3.0, 4.0])
    manager.save()
    loaded = load_tf_checkpoint(tmp_path)
    assert loaded["v/.ATTRIBUTES/VARIABLE_VALUE"].tolist() == [3.0, 4.0]


def test_empty_directory_and_missing_paths_say_not_found(tmp_path: Path) -> None:
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(tmp_path)
    assert_format_error(excinfo, tmp_path, "no checkpoint found")
    missing = tmp_path / "nope" / "model.ckpt"
    with pytest.raises(CheckpointFormatError) as excinfo:
        list_variables(missing)
    assert_format_error(excinfo, missing, "not found")
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(f"{missing}.index")
    assert_format_error(excinfo, Path(f"{missing}.index"), "index file not found")
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(f"{missing}{DATA}")
    assert_format_error(excinfo, Path(f"{missing}.index"), "index file not found")


def test_unknown_tensor_name_raises_key_error_that_is_also_a_checkpoint_error(small_prefix: Path) -> None:
    with CheckpointReader(small_prefix) as reader:
        with pytest.raises(TensorNotFoundError) as excinfo:
            reader.read("nope")
    assert isinstance(excinfo.value, KeyError) and isinstance(excinfo.value, CheckpointFormatError)
    assert str(excinfo.value) == f"{small_prefix}.index: no tensor named 'nope' in checkpoint"


def test_arrays_stay_valid_after_the_reader_is_closed_and_reading_again_reopens(
    small_prefix: Path, tmp_path: Path
) -> None:
    with CheckpointReader(small_prefix) as reader:
        a = reader.read("a")
    assert a.sum() == 66 and not a.flags.writeable
    with pytest.raises(ValueError):
        a[0, 0] = 1
    assert reader.read("b").tolist() == [1, -2, 3]
    v1 = save_v1(tmp_path / "v1.ckpt", {"w": np.arange(3, dtype=np.float32)})
    with CheckpointReader(v1) as reader:
        w = reader.read("w")
    assert w.tolist() == [0, 1, 2] and reader.read("w").tolist() == [0, 1, 2]


# --------------------------------------------------------------------------- bad inputs


def test_empty_index_file(tmp_path: Path) -> None:
    (tmp_path / "m.index").write_bytes(b"")
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(tmp_path / "m")
    assert_format_error(excinfo, tmp_path / "m.index", "index file is empty")


def test_empty_file_given_as_v1_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "model.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(tmp_path / "model.ckpt")
    assert_format_error(excinfo, tmp_path / "model.ckpt", "checkpoint file is empty")


def test_random_bytes_are_not_a_checkpoint(tmp_path: Path) -> None:
    junk = np.random.default_rng(0).bytes(5000)
    (tmp_path / "junk.bin").write_bytes(junk)
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(tmp_path / "junk.bin")
    assert_format_error(excinfo, tmp_path / "junk.bin", "not a TensorFlow checkpoint")
    (tmp_path / "junk.index").write_bytes(junk)
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(tmp_path / "junk")
    assert_format_error(excinfo, tmp_path / "junk.index", "bad table magic number")


def test_bad_magic_number(small_prefix: Path) -> None:
    index = Path(f"{small_prefix}.index")
    data = bytearray(index.read_bytes())
    data[-1] ^= 0xFF
    index.write_bytes(bytes(data))
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(small_prefix)
    assert_format_error(excinfo, index, "bad table magic number")


@pytest.mark.parametrize("keep", [1, 20, 47, 48, 100, -1])
def test_truncated_index_file(small_prefix: Path, keep: int) -> None:
    index = Path(f"{small_prefix}.index")
    data = index.read_bytes()
    index.write_bytes(data[:keep])
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(small_prefix)
    phrase = "too short for a table footer" if len(data[:keep]) < 48 else "bad table magic number"
    assert_format_error(excinfo, index, phrase)


def test_index_with_bytes_cut_from_the_middle_has_blocks_outside_the_file(small_prefix: Path) -> None:
    index = Path(f"{small_prefix}.index")
    data = index.read_bytes()
    index.write_bytes(data[:10] + data[60:])
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(small_prefix)
    assert_format_error(excinfo, index, "lies outside the table data")


def test_flipped_byte_in_the_index_is_a_corrupt_block(small_prefix: Path) -> None:
    index = Path(f"{small_prefix}.index")
    data = bytearray(index.read_bytes())
    data[12] ^= 0x01
    index.write_bytes(bytes(data))
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(small_prefix)
    assert_format_error(excinfo, index, "data block at offset 0 is corrupt", "crc32c")


def test_truncated_data_file(small_prefix: Path) -> None:
    data_path = Path(f"{small_prefix}{DATA}")
    data_path.write_bytes(data_path.read_bytes()[:50])
    with CheckpointReader(small_prefix) as reader:
        assert reader.read("a").shape == (3, 4)  # bytes [0, 48) are still there
        with pytest.raises(CheckpointFormatError) as excinfo:
            reader.read("b")
    assert_format_error(excinfo, data_path, "'b'", "truncated data file", "[48, 72)")


def test_flipped_byte_in_a_tensor_raises_checksum_error_naming_the_tensor(small_prefix: Path) -> None:
    data_path = Path(f"{small_prefix}{DATA}")
    data = bytearray(data_path.read_bytes())
    data[50] ^= 0x10  # inside "b" (bytes 48..72)
    data_path.write_bytes(bytes(data))
    with CheckpointReader(small_prefix) as reader:
        assert reader.read("a").sum() == 66
        with pytest.raises(ChecksumError) as excinfo:
            reader.read("b")
    assert_format_error(excinfo, data_path, "tensor 'b' is corrupt", "checksum mismatch")
    with pytest.raises(ChecksumError):
        load_tf_checkpoint(small_prefix)
    corrupted = load_tf_checkpoint(small_prefix, verify_crc=False)["b"]
    assert corrupted.tolist() != [1, -2, 3]


def test_size_that_does_not_match_the_shape_is_an_error(tmp_path: Path) -> None:
    prefix = write_raw_bundle(tmp_path / "m", [("w", entry_proto(1, (3, 4), 0, 44))], bytes(48))
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(prefix)
    assert_format_error(excinfo, Path(f"{prefix}.index"), "'w'", "claims 44 bytes", "needs 48 bytes", "size mismatch")


def test_giant_claimed_tensor_fails_at_once_without_allocating(tmp_path: Path) -> None:
    one_tib = 1 << 40
    prefix = write_raw_bundle(
        tmp_path / "m", [("huge", entry_proto(1, (1 << 20, 1 << 18), 0, one_tib))], bytes(16)
    )
    tracemalloc.start()
    start = time.process_time()
    try:
        with CheckpointReader(prefix) as reader:
            assert reader.entries["huge"].size == one_tib
            with pytest.raises(CheckpointFormatError) as excinfo:
                reader.read("huge")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.process_time() - start < 10.0  # CPU-time guard: never reads or allocates the claimed TiB
    assert peak < 1 << 20
    assert_format_error(excinfo, Path(f"{prefix}{DATA}"), "'huge'", "truncated data file", str(one_tib))


def test_giant_string_tensor_claim_fails_without_allocating(tmp_path: Path) -> None:
    prefix = write_raw_bundle(tmp_path / "m", [("s", entry_proto(7, (1 << 40,), 0, 8, 0))], bytes(8))
    with CheckpointReader(prefix) as reader:
        with pytest.raises(CheckpointFormatError) as excinfo:
            reader.read("s")
    assert_format_error(excinfo, Path(f"{prefix}{DATA}"), "'s'", "cannot fit")


@pytest.mark.parametrize(
    "entries, header, phrases",
    [
        ([("w", entry_proto(99, (2,), 0, 8))], b"", ["'w'", "unknown dtype 99"]),
        ([("w", entry_proto(1, (2,), 0, 8))], header_proto(endianness=1), ["big-endian"]),
        ([("w", entry_proto(1, (2,), 0, 8))], header_proto(num_shards=0), ["claims 0 data shards"]),
        ([("w", entry_proto(1, (2,), 0, 8) + wire.field_varint(3, 1))], b"", ["'w'", "shard 1", "1 shards"]),
        ([("w", entry_proto(1, (), 0, 4) + wire.field_bytes(2, wire.field_varint(3, 1)))], b"", ["unknown rank"]),
        ([("w", wire.field_varint(1, 1) + wire.field_bytes(2, wire.field_bytes(2, wire.field_varint(1, -1))))],
         b"", ["'w'", "negative"]),
        ([("w", wire.field_bytes(1, b"x"))], b"", ["BundleEntryProto field 1 has wire type 2, expected 0"]),
        ([("w", entry_proto(1, (2,), 0, 8) + bytes([0x33]))], b"", ["unsupported wire type 3"]),
        ([("w", entry_proto(1, (2,), 0, 8) + bytes([0x28, 0x80]))], b"", ["truncated varint"]),
        ([("w", entry_proto(1, (2,), 0, 8) + bytes([0x28]) + b"\xff" * 10 + b"\x01")], b"", ["longer than 10 bytes"]),
        ([(b"\xff", entry_proto(1, (2,), 0, 8))], b"", ["tensor name is not valid UTF-8"]),
        ([("w", entry_proto(1, (1,) * 255, 0, 4))], b"", ["more than 254 dimensions"]),
        ([("w", entry_proto(1, (2,), 0, 8))], header_proto() + wire.field_bytes(3, wire.field_varint(2, 2)),
         ["needs a newer reader"]),
    ],
)
def test_invalid_index_protos_are_rejected_with_a_specific_message(tmp_path: Path, entries, header, phrases) -> None:
    write_raw_bundle(tmp_path / "m", entries, bytes(8), header)
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(tmp_path / "m")
    assert_format_error(excinfo, tmp_path / "m.index", *phrases)


def test_duplicate_tensor_names_are_rejected(tmp_path: Path) -> None:
    items = [(b"", header_proto()), (b"a", entry_proto(1, (), 0, 4)), (b"b", entry_proto(1, (), 4, 4))]
    table = bytearray(wire.encode_table(items))
    position = table.index(b"b\x08\x01")  # entry "b" (shares no prefix with "a") -> rename it "a"
    table[position] = ord("a")
    (tmp_path / "m.index").write_bytes(with_block_crcs_fixed(bytes(table)))
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(tmp_path / "m")
    assert_format_error(excinfo, tmp_path / "m.index", "out of order or duplicated", "b'a' after b'a'")


def test_missing_header_entry_and_compressed_blocks_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "m.index").write_bytes(wire.encode_table([(b"a", entry_proto(1, (), 0, 4))]))
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(tmp_path / "m")
    assert_format_error(excinfo, tmp_path / "m.index", "no bundle header entry")
    table = bytearray(wire.encode_table([(b"", header_proto())]))
    table[table.index(b"\x00\x00\x00\x00\x01\x00\x00\x00") + 8] = 1  # first block's trailer type -> snappy
    (tmp_path / "m.index").write_bytes(bytes(table))
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(tmp_path / "m")
    assert_format_error(excinfo, tmp_path / "m.index", "compressed (snappy)")


def test_missing_second_shard_says_data_file_not_found(tmp_path: Path) -> None:
    entries = [("a", entry_proto(1, (), 0, 4, masked_crc32c(bytes(4)))),
               ("b", entry_proto(1, (), 0, 4, masked_crc32c(bytes(4))) + wire.field_varint(3, 1))]
    items = [(b"", header_proto(num_shards=2))] + [(n.encode(), p) for n, p in entries]
    (tmp_path / "m.index").write_bytes(wire.encode_table(items))
    (tmp_path / "m.data-00000-of-00002").write_bytes(bytes(4))
    with CheckpointReader(tmp_path / "m") as reader:
        assert reader.read("a") == 0
        with pytest.raises(CheckpointFormatError) as excinfo:
            reader.read("b")
    assert_format_error(excinfo, tmp_path / "m.data-00001-of-00002", "data file not found", "shard 1 of 2")


def test_v1_file_with_a_corrupt_block_and_truncation(tmp_path: Path) -> None:
    path = save_v1(tmp_path / "v1.ckpt", {"w": np.arange(10, dtype=np.float32)})
    good = path.read_bytes()
    path.write_bytes(good[:-1])
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(path)
    assert_format_error(excinfo, path, "not a TensorFlow checkpoint")
    corrupt = bytearray(good)
    corrupt[20] ^= 0x04
    path.write_bytes(bytes(corrupt))
    with pytest.raises(CheckpointFormatError) as excinfo:
        CheckpointReader(path)
    assert_format_error(excinfo, path, "is corrupt", "crc32c")


def test_tensor_entry_numel_and_dtype_name_defaults() -> None:
    entry = TensorEntry("x", np.dtype(np.float32), (2, 3), 0, 0, 24, None)
    assert entry.numel == 6 and entry.dtype_name == "float32" and entry.numeric
    assert TensorEntry("s", np.dtype(object), (), 0, 0, 0, 0, "string").numeric is False
