"""The zero-copy crc32c of memory-mapped tensors, NaN through the inference path, and bfloat16 autocast."""

import mmap

import google_crc32c
import numpy as np
import pytest
import torch

from i3d_convert.weights.synthetic import calibrated_state_dict, random_clip
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


def _small_model_and_clip():
    model = InceptionI3d(final_endpoint="Mixed_5c").eval()  # every one of the 13 pools; Logits needs 224x224
    state = calibrated_state_dict()
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("Logits")})
    return model, random_clip((2, 3, 9, 64, 64), seed=3)


def test_compiled_max_pools_give_the_eager_pools_bits_and_record_a_choice_per_shape():
    model, clip = _small_model_and_clip()
    with torch.inference_mode():
        eager = model(clip)
        assert model.compile_max_pools() == 13
        compiled = model(clip)
        again = model(clip)
    assert torch.equal(compiled, eager) and torch.equal(again, eager)
    pools = [m for m in model.modules() if hasattr(m, "_compiled_wins")]
    assert all(len(p._compiled_wins) == 1 for p in pools)  # one timing check per pool and input shape
    model.compile_max_pools(False)
    assert not any(p.compiled for p in pools)


def test_compiled_max_pools_fall_back_to_eager_with_one_warning_when_compiling_fails(monkeypatch):
    from i3d_convert.models import compiled_pool

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nsecond line")

    monkeypatch.setattr(compiled_pool, "_unavailable", [])
    monkeypatch.setattr(compiled_pool, "compiled_max_pool3d", no_compiler)
    model, clip = _small_model_and_clip()
    with torch.inference_mode():
        eager = model(clip)
        model.compile_max_pools()
        with pytest.warns(RuntimeWarning, match=r"compiled max pools unavailable.*no C\+\+ compiler found\)$") as caught:
            fallback = model(clip)
    assert torch.equal(fallback, eager)
    assert len([w for w in caught if "compiled max pools" in str(w.message)]) == 1


@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((2, 64, 9, 32, 32), (1, 3, 3), (1, 2, 2), (0, 0, 0)),  # MaxPool3d_2a: TF's extra pixel via ceil_mode
    ((1, 192, 5, 14, 14), (3, 3, 3), (1, 1, 1), (1, 1, 1)),  # the Mixed blocks' pools
    ((1, 480, 5, 15, 15), (3, 3, 3), (2, 2, 2), (1, 1, 1)),  # MaxPool3d_4a on odd sizes
])
def test_compiled_max_pool_is_bit_identical_to_eager_with_nan_and_inf(shape, kernel, stride, padding):
    from i3d_convert.models.compiled_pool import compiled_max_pool3d

    x = torch.randn(shape).contiguous(memory_format=torch.channels_last_3d)
    flat = x.permute(0, 2, 3, 4, 1).view(-1)  # x's memory, in order
    flat[::997] = float("-inf")
    flat[::1009] = float("inf")
    with torch.inference_mode():
        eager = torch.nn.functional.max_pool3d(x, kernel, stride, padding, ceil_mode=True)
        compiled = compiled_max_pool3d(x, kernel, stride, padding)
        flat[::1013] = float("nan")
        eager_nan = torch.nn.functional.max_pool3d(x, kernel, stride, padding, ceil_mode=True)
        compiled_nan = compiled_max_pool3d(x, kernel, stride, padding)
    assert torch.equal(compiled, eager) and compiled.stride() == eager.stride()
    assert torch.equal(compiled_nan.isnan(), eager_nan.isnan()) and eager_nan.isnan().any()
    finite = ~eager_nan.isnan()
    assert torch.equal(compiled_nan[finite], eager_nan[finite])
