"""``i3d-convert features``: one row per sliding window, each equal to that window run alone.

Clips are small spatially (32x32) so that Mixed_5c/pool over a 300-frame clip
stays cheap; the Logits endpoint, which needs windows of at least 9 frames of
193x193, is exercised once at that smallest size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from i3d_convert.conversion.tf_to_torch import convert_to_file
from i3d_convert.errors import I3DConvertError
from i3d_convert.architecture import min_logits_input
from i3d_convert.dataset.features import endpoint_of, extract_features, window_starts
from i3d_convert.io.clips import RANGE_TOLERANCE, load_clip_array, validate_clips
from i3d_convert.weights.factory import i3d
from i3d_convert.verification.metrics import difference
from i3d_convert.weights.synthetic import random_clip

#: Relative L2 error allowed between a row and its window run alone. Batched and single-window
#: float32 convolutions may round differently (oneDNN chooses kernels and work splits by shape):
#: measured 0 in most runs and single elements off by ~4e-5 relative in others; a window off by
#: one frame gives ~2e-1.
BATCH_REL_L2 = 1e-5


def assert_rows_close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    error = difference(got, expected).rel_l2
    assert error <= BATCH_REL_L2, error


@pytest.fixture(scope="module")
def weights(synthetic_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("features") / "rgb_imagenet.safetensors"
    convert_to_file(synthetic_checkpoint("rgb_imagenet"), out)
    return out


def thwc_clip(frames: int, size: int, seed: int, channels: int = 3) -> np.ndarray:
    """A seeded [T, H, W, C] float32 clip in [-1, 1]."""
    return random_clip((1, channels, frames, size, size), seed=seed)[0].permute(1, 2, 3, 0).numpy()


def alone(model, clip_thwc: np.ndarray, start: int, stop: int, endpoint: str) -> np.ndarray:
    window = torch.from_numpy(np.ascontiguousarray(clip_thwc[start:stop])).permute(3, 0, 1, 2)[None]
    with torch.inference_mode():
        return endpoint_of(model, window, endpoint)[0].numpy()


def test_windows_start_every_stride_while_a_whole_window_fits():
    assert window_starts(300, 64, 64) == [0, 64, 128, 192]
    assert window_starts(300, 64, 100) == [0, 100, 200]
    assert window_starts(64, 64, 10) == [0]
    assert window_starts(20, 64, 64) == [0]  # a short clip is one shorter window
    for frames, window, stride in [(300, 64, 48), (100, 16, 7), (17, 16, 1)]:
        starts = window_starts(frames, window, stride)
        assert starts[0] == 0 and all(b - a == stride for a, b in zip(starts, starts[1:]))
        assert starts[-1] + window <= frames < starts[-1] + stride + window
    with pytest.raises(I3DConvertError, match="at least 1"):
        window_starts(10, 0, 1)


def test_features_of_a_300_frame_clip_are_one_row_per_window_each_equal_to_the_window_alone(cli, weights, tmp_path):
    clip = thwc_clip(300, 32, seed=3)
    source = tmp_path / "clip.npy"
    np.save(source, clip)

    code, out, err = cli("features", source, "-o", tmp_path / "pool.npy", "--endpoint", "pool", "--window", "64",
                         "--stride", "64", "--batch-size", "3", "--weights", weights, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["rows"] == 4 and summary["windows"] == [[0, s, s + 64] for s in (0, 64, 128, 192)]
    pooled = np.load(tmp_path / "pool.npy")
    assert pooled.shape == (4, 1024) and pooled.dtype == np.float32

    code, out, err = cli("features", source, "-o", tmp_path / "mixed.npy", "--endpoint", "Mixed_5c",
                         "--stride", "128", "--batch-size", "2", "--weights", weights, "--quiet")
    assert (code, out) == (0, ""), err
    mixed = np.load(tmp_path / "mixed.npy")
    assert mixed.shape == (2, 1024, 8, 1, 1)  # windows at 0 and 128; [1024, 64/8, 32/32, 32/32] each

    model = i3d(weights=weights, final_endpoint="Mixed_5c")
    for row, start in enumerate((0, 64, 128, 192)):
        expected = alone(model, clip, start, start + 64, "Mixed_5c")
        assert_rows_close(pooled[row], expected.mean(axis=(1, 2, 3)))
        if start in (0, 128):
            assert_rows_close(mixed[start // 128], expected)


def test_logits_rows_equal_each_window_alone_at_the_smallest_size(weights):
    frames, height, width = min_logits_input()
    clip = thwc_clip(frames + 1, height, seed=5)
    model = i3d(weights=weights)
    seen = []
    result = extract_features(model, clip, endpoint="Logits", window=frames, stride=1, batch_size=2,
                              progress=lambda done, total: seen.append((done, total)))
    assert result.features.shape == (2, 400)
    assert result.windows == [(0, 0, frames), (0, 1, frames + 1)] and seen == [(2, 2)]
    for row, (_, start, stop) in enumerate(result.windows):
        assert_rows_close(result.features[row], alone(model, clip, start, stop, "Logits"))


def test_logits_refuse_windows_too_small_before_any_work(weights):
    model = i3d(weights=weights)
    with pytest.raises(I3DConvertError, match="at least 9 frames of 193x193"):
        extract_features(model, thwc_clip(20, 64, seed=1), endpoint="Logits", window=16)
    with pytest.raises(I3DConvertError, match="no Logits endpoint"):
        extract_features(i3d(weights=weights, final_endpoint="Mixed_5c"), thwc_clip(9, 32, seed=1), endpoint="Logits",
                         window=9)


def _noise_gif(tmp_path, frames: int = 12):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(frames)]
    gif = tmp_path / "clip.gif"
    images[0].save(gif, save_all=True, append_images=images[1:], duration=40, loop=0)
    return gif


def test_a_gif_is_resized_cropped_scaled_and_windowed(cli, weights, tmp_path):
    from i3d_convert.dataset.recipe import rgb_input
    from i3d_convert.io.video_decode import DecodeOptions, decode

    gif = _noise_gif(tmp_path)
    code, out, err = cli("features", gif, "-o", tmp_path / "gif.npy", "--resize", "32", "--crop", "32", "--fps",
                         "native", "--window", "8", "--stride", "4", "--weights", weights)
    assert code == 0, err
    assert "wrote" in out and "2 windows" in out
    got = np.load(tmp_path / "gif.npy")
    decoded = rgb_input(decode(gif, DecodeOptions(fps=None, resize_shorter=32, crop=32)))[None]
    assert decoded.shape == (1, 12, 32, 32, 3) and decoded.min() >= -1 and decoded.max() <= 1
    model = i3d(weights=weights, final_endpoint="Mixed_5c")
    expected = extract_features(model, decoded, window=8, stride=4, batch_size=1).features
    assert_rows_close(got, expected)


def test_a_videos_json_summary_lists_the_windows_the_features_were_computed_on(cli, weights, tmp_path):
    gif = _noise_gif(tmp_path)  # 12 frames: windows of 8 every 3 frames start at 0 and 3 (6 + 8 > 12)
    code, out, err = cli("features", gif, "-o", tmp_path / "gif.npy", "--resize", "32", "--crop", "32", "--fps",
                         "native", "--window", "8", "--stride", "3", "--weights", weights, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["windows"] == [[0, 0, 8], [0, 3, 11]]
    assert summary["rows"] == np.load(tmp_path / "gif.npy").shape[0] == 2


@pytest.mark.parametrize(
    "array,message",
    [
        (np.zeros((4, 8, 8, 3), np.uint8), "floating point.*x / 127.5 - 1"),
        (np.zeros((8, 8, 3), np.float32), "NTHWC or THWC"),
        (np.zeros((1, 3, 4, 8, 8), np.float32), "channels last.*channels first"),
        (np.full((4, 8, 8, 3), np.nan, np.float32), "non-finite"),
        (np.full((4, 8, 8, 3), 2.0, np.float32), r"outside \[-1, 1\]"),
        (np.full((4, 8, 8, 3), -1 - 2 * RANGE_TOLERANCE, np.float32), r"outside \[-1, 1\]"),
        (np.zeros((0, 8, 8, 3), np.float32), "empty"),
    ],
)
def test_bad_npy_clips_are_refused_naming_the_file(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(I3DConvertError, match=message) as info:
        load_clip_array(path)
    assert str(info.value).startswith(str(path))


def test_npy_input_accepts_both_layouts_and_checks_the_model_channels(tmp_path):
    one = thwc_clip(5, 8, seed=0, channels=2)
    assert validate_clips(one).shape == (1, 5, 8, 8, 2)
    assert validate_clips(np.stack([one, one])).shape == (2, 5, 8, 8, 2)
    edge = np.full((2, 4, 4, 3), 1 + RANGE_TOLERANCE / 2, np.float32)
    assert validate_clips(edge).shape == (1, 2, 4, 4, 3)
    with pytest.raises(I3DConvertError, match="2 channels but the model takes 3"):
        validate_clips(one, "clip.npy", in_channels=3)
    not_npy = tmp_path / "text.npy"
    not_npy.write_text("hello")
    with pytest.raises(I3DConvertError, match="not a readable .npy"):
        load_clip_array(not_npy)


def test_cli_errors_are_one_line_and_leave_no_output(cli, weights, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((4, 8, 8, 3), 3.0, np.float32))
    code, out, err = cli("features", bad, "-o", tmp_path / "f.npy", "--weights", weights)
    assert code == 1 and err.count("\n") == 1 and str(bad) in err and "outside [-1, 1]" in err
    assert not (tmp_path / "f.npy").exists()

    existing = tmp_path / "existing.npy"
    existing.write_bytes(b"keep")
    code, _, err = cli("features", bad, "-o", existing, "--weights", weights)
    assert code == 1 and "--overwrite" in err and existing.read_bytes() == b"keep"

    code, _, err = cli("features", bad, "-o", tmp_path / "g.npy", "--endpoint", "fc7")
    assert code == 1 and "unknown endpoint 'fc7'" in err
    if not torch.cuda.is_available():
        code, _, err = cli("features", bad, "-o", tmp_path / "g.npy", "--device", "cuda")
        assert code == 1 and "CUDA is not available" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy", "existing.npy"]


def test_overwrite_replaces_the_output(cli, weights, tmp_path):
    source = tmp_path / "clip.npy"
    np.save(source, thwc_clip(8, 32, seed=2))
    output = tmp_path / "feats.npy"
    output.write_bytes(b"old")
    code, _, err = cli("features", source, "-o", output, "--window", "8", "--weights", weights, "--overwrite", "-q")
    assert code == 0, err
    assert np.load(output).shape == (1, 1024)
