"""The zero-copy crc32c of memory-mapped tensors, NaN through the inference path, and bfloat16 autocast."""

import mmap

import google_crc32c
import numpy as np
import pytest
import torch

from i3d_convert.conversion.synthetic import calibrated_state_dict, random_clip
from i3d_convert.errors import ChecksumError
from i3d_convert.io import bundle_format
from i3d_convert.io.bundle_format import buffer_crc32c, masked_crc32c
from i3d_convert.io.bundle_writer import write_checkpoint
from i3d_convert.io.checkpoint_reader import CheckpointReader
from i3d_convert.models.i3d import InceptionI3d, Unit3D


def test_crc32c_of_the_standard_check_string_is_the_published_value():
    assert buffer_crc32c(b"123456789") == 0xE3069283  # RFC 3720 / the CRC catalogue's check value


@pytest.mark.parametrize("start,end", [(0, None), (5, 1_000_003), (4096, 4096), (123, 3_000_000)])
def test_crc32c_over_a_read_only_mapping_matches_google_crc32c_of_the_copied_bytes(tmp_path, start, end):
    data = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    path = tmp_path / "data"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
        assert buffer_crc32c(mapping, start, end) == google_crc32c.value(data[start:end])


def test_crc32c_fallback_without_the_c_library_gives_the_same_value(monkeypatch):
    data = np.random.default_rng(1).integers(0, 256, 2_500_000, dtype=np.uint8).tobytes()
    monkeypatch.setattr(bundle_format, "_CRC32C_LIBRARY", None)
    assert buffer_crc32c(data, 17, 2_400_000) == google_crc32c.value(data[17:2_400_000])


def test_corrupt_tensor_is_still_refused_by_the_zero_copy_check(tmp_path):
    prefix = tmp_path / "model.ckpt"
    write_checkpoint(prefix, {"w": np.arange(1000, dtype=np.float32)})
    data_path = tmp_path / "model.ckpt.data-00000-of-00001"
    raw = bytearray(data_path.read_bytes())
    raw[100] ^= 0x01
    data_path.write_bytes(bytes(raw))
    with CheckpointReader(prefix) as reader, pytest.raises(ChecksumError, match="crc32c"):
        reader.read("w")


def test_masked_crc32c_of_an_array_covers_its_bytes_in_memory_order():
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    expected = google_crc32c.value(array.tobytes())
    assert masked_crc32c(array.T) != masked_crc32c(array)  # a transposed view is hashed in its own order
    assert masked_crc32c(array) == ((((expected >> 15) | (expected << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _model() -> InceptionI3d:
    model = InceptionI3d().eval()
    model.load_state_dict(calibrated_state_dict(seed=0))
    return model


def test_relu_keeps_nan_as_tensorflow_does():
    """TF's relu(NaN) is NaN; a ReLU fused as a oneDNN post-op returns 0 (max(x, 0)), which would turn
    NaN weights into plausible features. The inference path must keep NaN."""
    model, clip = _model(), random_clip((1, 3, 16, 64, 64), seed=3)
    with torch.no_grad():
        model.Conv3d_1a_7x7.conv.weight[0, 0, 0, 0, 0] = float("nan")
    with torch.inference_mode():
        out = model.forward_endpoints(clip, ["Conv3d_1a_7x7"])["Conv3d_1a_7x7"]
    assert torch.isnan(out[:, 0]).any()


def test_unit_inference_path_matches_the_training_path_in_float32():
    unit = Unit3D(8, 16, (3, 3, 3)).eval()
    with torch.no_grad():
        unit.bn.running_mean.uniform_(-0.5, 0.5)
        unit.bn.running_var.uniform_(0.5, 2.0)
        unit.bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 8, 5, 9, 9).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        fast = unit(x)
    with torch.enable_grad():
        plain = unit(x).detach()
    assert (fast == 0).float().mean() > 0.2  # the ReLU clipped something
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_bfloat16_autocast_runs_the_convolutions_in_bfloat16_and_stays_close_to_float32():
    model, clip = _model(), random_clip((1, 3, 16, 224, 224), seed=4)
    with torch.inference_mode():
        exact = model(clip)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(clip)
    assert low.dtype == torch.bfloat16
    assert not torch.equal(low.float(), exact)
    rel_l2 = float((low.float() - exact).norm() / exact.norm())
    assert rel_l2 < 0.25, rel_l2  # 0.10 here on synthetic weights; unrelated logits give ~1.4


def test_float32_path_is_unchanged_outside_autocast():
    model, clip = _model(), random_clip((1, 3, 16, 224, 224), seed=5)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
            a = model(clip)
        b = model(clip)
    assert a.dtype == torch.float32 and torch.equal(a, b)


_FAULTS_SCRIPT = """
import resource, sys, torch
from i3d_convert.device import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else None

def allocate_and_touch():
    for _ in range(4):
        torch.empty(64 * 2**20, dtype=torch.uint8).fill_(1)  # 64 MiB: above glibc's largest mmap threshold

allocate_and_touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
allocate_and_touch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_reused_freed_memory_makes_repeated_large_tensors_fault_free():
    import subprocess
    import sys

    def faults(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, mode], capture_output=True, text=True, check=True)
        applied, count = out.stdout.split()
        return applied, int(count)

    default_applied, default_faults = faults("default")
    reuse_applied, reuse_faults = faults("reuse")
    # glibc maps each 64 MiB block afresh: 4 x 16384 faults with 4 KiB pages (fewer with huge pages)
    assert default_faults >= 10 * max(reuse_faults, 10), (default_faults, reuse_faults)
    assert reuse_applied == "True" and reuse_faults < 100, reuse_faults
