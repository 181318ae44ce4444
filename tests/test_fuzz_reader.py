"""Fuzzing the checkpoint readers with mutated real-format files.

Property: for any mutation of a valid checkpoint (bit flips, truncation,
spliced or overwritten varints, oversized lengths, unterminated varints,
random overwrites and deletions), listing and reading every tensor either
returns exactly the original tensors or raises :class:`CheckpointFormatError`
-- never another exception, never a hang (each case's CPU time is checked and
a wall-clock alarm interrupts a hung one), never a memory blow-up (peak RSS is
checked). Each mutated table is then read once more with its blocks given
valid crc32c trailers again, so that the mutation reaches the block, varint
and protobuf parsers instead of stopping at the checksum; there a successful
read need not equal the originals (a renamed tensor is still a valid file),
but every array must match its entry and nothing but CheckpointFormatError
may escape.

``I3D_FUZZ_EXAMPLES`` sets the number of V2 cases (default 10,000 cases from
6,250 hypothesis examples; the V1 and string-tensor runs add a fifth and a
tenth of that) for a longer run.
"""

from __future__ import annotations

import gc
import os
import resource
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Tuple, Union

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from i3d_convert.io import protowire as wire
from i3d_convert.errors import CheckpointFormatError
from i3d_convert.io.checkpoint_reader import CheckpointReader
from i3d_convert.io.bundle_writer import write_checkpoint

TOTAL = int(os.environ.get("I3D_FUZZ_EXAMPLES", "10000"))
CASE_SECONDS = 1.0  # CPU seconds every single case, however mutated, must finish within
ALARM_SECONDS = 10.0  # wall-clock seconds after which a hung case is interrupted instead of hanging CI
RSS_GROWTH_LIMIT = 512 << 20
DATA = ".data-00000-of-00001"

ORIGINALS: Dict[str, np.ndarray] = {
    "conv/w": np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
    "conv/b": np.array([1.5, -2.25], np.float64),
    "ids": np.array([-(2**40), 0, 2**40], np.int64),
    "mask": np.array([[True, False], [False, True]]),
    "pixels": np.array([0, 7, 255], np.uint8),
    "half": np.array([0.5, -1.0, 65504.0], np.float16),
    "small": np.array([-128, 127], np.int8),
    "step": np.array(42, np.int32),
    "wave": np.array([1 - 2j, 0.5j], np.complex64),
    "void": np.zeros((0, 3), np.float32),
}

Outcome = Union[CheckpointFormatError, Tuple[List[tuple], Dict[str, np.ndarray]]]


def settings_for(examples: int):
    return settings(
        max_examples=max(examples, 1),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture,
        ],
    )


# --------------------------------------------------------------------------- mutations

# One mutation is (kind, position, argument): a flat strategy, because hypothesis spends far more
# time drawing nested one_of/binary strategies than the reader spends on a case.
_KINDS = ("flip", "truncate", "insert_varint", "overwrite_varint", "unterminated_varint", "overwrite", "delete")
_SPECIAL_VARINTS = (0, 1, 0x7F, 0x80, (1 << 31) - 1, 1 << 32, 1 << 40, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)
_mutation = st.tuples(
    st.integers(0, len(_KINDS) - 1), st.integers(min_value=0, max_value=1 << 16), st.integers(0, (1 << 64) - 1)
)
mutations = st.lists(_mutation, min_size=1, max_size=4)


def mutate(data: bytes, steps: List[Tuple[int, int, int]]) -> bytes:
    """Apply bit flips, truncation, spliced/overwritten/unterminated varints, overwrites and deletions."""
    buf = bytearray(data)
    for kind_index, position, arg in steps:
        kind = _KINDS[kind_index]
        at = position % (len(buf) + 1)
        varint = _SPECIAL_VARINTS[(arg >> 2) % len(_SPECIAL_VARINTS)] if arg % 4 == 0 else arg
        if kind == "flip":
            if buf:
                buf[at % len(buf)] ^= 1 << (arg % 8)
        elif kind == "truncate":
            del buf[at:]
        elif kind == "insert_varint":
            buf[at:at] = wire.encode_varint(varint)
        elif kind == "overwrite_varint":
            encoded = wire.encode_varint(varint)
            buf[at : at + len(encoded)] = encoded
        elif kind == "unterminated_varint":
            count = 1 + arg % 12
            buf[at : at + count] = b"\xff" * count
        elif kind == "overwrite":
            chunk = arg.to_bytes(8, "little")[: 1 + (arg >> 61)]
            buf[at : at + len(chunk)] = chunk
        else:  # delete
            del buf[at : at + 1 + arg % 32]
    return bytes(buf)


def fix_block_crcs(table: bytes) -> bytes:
    """Give every block the (possibly mutated) footer and index point at a valid crc32c trailer."""
    buf = bytearray(table)

    def fix(offset: int, size: int) -> None:
        if 0 <= offset and offset + size + wire.BLOCK_TRAILER_SIZE <= len(buf) - wire.FOOTER_SIZE:
            crc = wire.mask_crc(wire.crc32c(bytes(buf[offset : offset + size + 1])))
            buf[offset + size + 1 : offset + size + 5] = crc.to_bytes(4, "little")

    try:
        footer = len(buf) - wire.FOOTER_SIZE
        if footer < 0:
            return table
        _, _, pos = wire._read_handle(buf, footer, footer + 40)
        index_offset, index_size, _ = wire._read_handle(buf, pos, footer + 40)
        fix(index_offset, index_size)
        for _, start, end in wire._block_entries(bytes(buf), index_offset, index_size, "index"):
            offset, size, _ = wire._read_handle(buf, start, end)
            fix(offset, size)
    except Exception:  # a table mangled beyond finding its blocks: leave it as it is
        pass
    return bytes(buf)


# --------------------------------------------------------------------------- running one case


class Hang(Exception):
    pass


@contextmanager
def alarm(seconds: float) -> Iterator[None]:
    def on_alarm(signum, frame):
        raise Hang(f"case still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def read_everything(path: Path) -> Outcome:
    """List and read every tensor; a CheckpointFormatError is an allowed outcome, anything else escapes."""
    # Python's cyclic GC is paused inside the timed case: on long runs hypothesis's own heap makes a
    # full collection cost more than a case, and that pause is not the reader's.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    start = time.thread_time()  # CPU time: a busy CI machine must not fail a fast case
    with alarm(ALARM_SECONDS):
        try:
            with CheckpointReader(path) as reader:
                listed = [(e.name, e.dtype_name, e.shape) for e in reader.entries.values()]
                arrays = {name: np.array(reader.read(name)) for name in reader.keys()}
                for name, array in arrays.items():
                    entry = reader.entries[name]
                    assert array.dtype == entry.dtype and array.shape == entry.shape, name
            outcome: Outcome = (listed, arrays)
        except CheckpointFormatError as exc:
            message = str(exc)
            assert "\n" not in message and exc.path and message.startswith(f"{exc.path}: "), message
            outcome = exc
    elapsed = time.thread_time() - start
    if gc_was_enabled:
        gc.enable()
    assert elapsed < CASE_SECONDS, f"case took {elapsed:.3f} s of CPU time"
    return outcome


def assert_original_or_error(outcome: Outcome, originals: Dict[str, np.ndarray]) -> None:
    if isinstance(outcome, CheckpointFormatError):
        return
    listed, arrays = outcome
    assert [name for name, _, _ in listed] == sorted(originals)
    for name, expected in originals.items():
        assert arrays[name].dtype == expected.dtype and arrays[name].shape == expected.shape, name
        assert arrays[name].tobytes() == expected.tobytes(), name


@pytest.fixture(autouse=True)
def bounded_memory() -> Iterator[None]:
    """Peak RSS may not grow much during a test (module fixtures, e.g. importing TensorFlow, run before)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    yield
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert after - before < RSS_GROWTH_LIMIT, f"peak RSS grew by {(after - before) >> 20} MiB while fuzzing"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Tuple[Path, bytes, bytes]:
    """(case prefix, original index bytes, original data bytes) of a small writer-made bundle."""
    root = tmp_path_factory.mktemp("fuzz-v2")
    write_checkpoint(root / "base", ORIGINALS)
    index = (root / "base.index").read_bytes()
    data = (root / f"base{DATA}").read_bytes()
    assert_original_or_error(read_everything(root / "base"), ORIGINALS)
    return root / "case", index, data


def overwrite(path: Union[str, Path], data: bytes) -> None:
    """Replace a file's contents in place (open+O_TRUNC of a non-empty file is ~100x slower on ext4)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def run_bundle_case(bundle, index: bytes, data: bytes) -> Outcome:
    prefix = bundle[0]
    overwrite(f"{prefix}.index", index)
    overwrite(f"{prefix}{DATA}", data)
    return read_everything(prefix)


# --------------------------------------------------------------------------- V2 (TensorBundle)
# Cases per run: index test 2 per example (as mutated, then with block crcs fixed), data test 1,
# index+data test 2: 2 * N/4 + N/4 + 2 * N/8 ... = N cases in all for N = I3D_FUZZ_EXAMPLES.


@settings_for(TOTAL // 4)
@given(steps=mutations)
def test_fuzz_mutated_index_reads_originals_or_raises_format_error(bundle, steps) -> None:
    index = mutate(bundle[1], steps)
    assert_original_or_error(run_bundle_case(bundle, index, bundle[2]), ORIGINALS)
    run_bundle_case(bundle, fix_block_crcs(index), bundle[2])  # reaches the parsers: any outcome but a crash


@settings_for(TOTAL // 4)
@given(steps=mutations)
def test_fuzz_mutated_data_shard_reads_originals_or_raises_format_error(bundle, steps) -> None:
    assert_original_or_error(run_bundle_case(bundle, bundle[1], mutate(bundle[2], steps)), ORIGINALS)


@settings_for((TOTAL - 3 * (TOTAL // 4) + 1) // 2)
@given(index_steps=mutations, data_steps=mutations)
def test_fuzz_mutated_index_and_data_read_originals_or_raise_format_error(bundle, index_steps, data_steps) -> None:
    index = mutate(bundle[1], index_steps)
    data = mutate(bundle[2], data_steps)
    assert_original_or_error(run_bundle_case(bundle, index, data), ORIGINALS)
    run_bundle_case(bundle, fix_block_crcs(index), data)


def test_index_truncated_at_every_length_raises_format_error(bundle) -> None:
    index = bundle[1]
    for length in range(len(index)):
        outcome = run_bundle_case(bundle, index[:length], bundle[2])
        assert isinstance(outcome, CheckpointFormatError), length
    assert_original_or_error(run_bundle_case(bundle, index, bundle[2]), ORIGINALS)


def test_data_shard_truncated_at_every_length_lists_then_raises_format_error(bundle) -> None:
    data = bundle[2]
    for length in range(len(data)):
        outcome = run_bundle_case(bundle, bundle[1], data[:length])
        assert isinstance(outcome, CheckpointFormatError), length
        assert "truncated data file" in str(outcome) or "mismatch" in str(outcome), str(outcome)


def test_every_single_bit_flip_of_the_index_raises_or_reads_originals(bundle) -> None:
    index = bundle[1]
    for position in range(len(index)):
        for bit in (0, 7):
            assert_original_or_error(run_bundle_case(bundle, mutate(index, [(0, position, bit)]), bundle[2]), ORIGINALS)


# --------------------------------------------------------------------------- V2 string tensors (TensorFlow-made)


@pytest.fixture(scope="module")
def string_bundle(tmp_path_factory) -> Tuple[Path, bytes, bytes]:
    import tensorflow as tf  # after torch (conftest)

    root = tmp_path_factory.mktemp("fuzz-strings")
    tf.raw_ops.SaveV2(
        prefix=str(root / "base"), tensor_names=["a", "text", "z"], shape_and_slices=[""] * 3,
        tensors=[tf.constant([1.0, 2.0]), tf.constant([b"", b"hi", b"\x80" * 300]), tf.constant(3)],
    )
    return root / "case", (root / "base.index").read_bytes(), (root / f"base{DATA}").read_bytes()


STRING_ORIGINALS = {
    "a": np.array([1.0, 2.0], np.float32),
    "text": np.array([b"", b"hi", b"\x80" * 300], dtype=object),
    "z": np.array(3, np.int32),
}


@settings_for(max(TOTAL // 20, 1))
@given(data_steps=mutations, index_steps=st.lists(_mutation, max_size=2))
def test_fuzz_string_tensors_read_originals_or_raise_format_error(string_bundle, data_steps, index_steps) -> None:
    index = mutate(string_bundle[1], index_steps)
    data = mutate(string_bundle[2], data_steps)
    outcome = run_bundle_case(string_bundle, index, data)
    if isinstance(outcome, tuple):
        assert [n for n, _, _ in outcome[0]] == sorted(STRING_ORIGINALS)
        for name, expected in STRING_ORIGINALS.items():
            assert outcome[1][name].tolist() == expected.tolist(), name
    run_bundle_case(string_bundle, fix_block_crcs(index), data)


# --------------------------------------------------------------------------- V1 (TensorFlow-made)

V1_ORIGINALS = {k: v for k, v in ORIGINALS.items() if k != "void"}


@pytest.fixture(scope="module")
def v1_file(tmp_path_factory) -> Tuple[Path, bytes]:
    import tensorflow as tf  # after torch (conftest)

    root = tmp_path_factory.mktemp("fuzz-v1")
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in V1_ORIGINALS.items()]
        saver = tf.compat.v1.train.Saver(variables, write_version=tf.compat.v1.train.SaverDef.V1)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(root / "base.ckpt"), write_meta_graph=False, write_state=False)
    base = (root / "base.ckpt").read_bytes()
    assert_original_or_error(read_everything(root / "base.ckpt"), V1_ORIGINALS)
    return root / "case.ckpt", base


@settings_for(max(TOTAL // 10, 1))
@given(steps=mutations)
def test_fuzz_mutated_v1_file_reads_originals_or_raises_format_error(v1_file, steps) -> None:
    path, base = v1_file
    mutated = mutate(base, steps)
    overwrite(path, mutated)
    assert_original_or_error(read_everything(path), V1_ORIGINALS)
    overwrite(path, fix_block_crcs(mutated))
    read_everything(path)


def test_v1_file_truncated_at_every_length_raises_format_error(v1_file) -> None:
    path, base = v1_file
    for length in range(len(base)):
        overwrite(path, base[:length])
        assert isinstance(read_everything(path), CheckpointFormatError), length
