"""The FVD presets' documented steps (i3d_convert.fvd.protocols), each against a
hand-written numpy evaluation of the op its source code runs (docs/fvd-protocols.md cites the lines):
torch's half-pixel bilinear, torch's antialiased bilinear (PIL's triangle filter), truncation to
uint8, and cd-fvd's / StyleGAN-V's Fréchet distance (raw-moment /N covariance, trace of sqrtm).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from i3d_convert.fvd import PROTOCOLS, FVDStats, distance
from i3d_convert.fvd.protocols import _cdfvd_loader_frames


def _bilinear_weights(size_in: int, size_out: int) -> np.ndarray:
    """[out, in] matrix of torch's bilinear, ``align_corners=False``, no antialias (half-pixel centres)."""
    matrix = np.zeros((size_out, size_in))
    for i in range(size_out):
        source = max((i + 0.5) * size_in / size_out - 0.5, 0.0)
        low = min(int(math.floor(source)), size_in - 1)
        high, frac = min(low + 1, size_in - 1), source - low
        matrix[i, low] += 1 - frac
        matrix[i, high] += frac
    return matrix


def _antialiased_bilinear_weights(size_in: int, size_out: int) -> np.ndarray:
    """[out, in] matrix of a triangle filter stretched by the downscale factor, normalised per row (PIL's BILINEAR)."""
    scale = size_in / size_out
    stretch = max(scale, 1.0)
    matrix = np.zeros((size_out, size_in))
    for i in range(size_out):
        centre = scale * (i + 0.5)
        first, last = max(int(centre - stretch + 0.5), 0), min(int(centre + stretch + 0.5), size_in)
        taps = np.maximum(0.0, 1 - np.abs((np.arange(first, last) - centre + 0.5) / stretch))
        matrix[i, first:last] = taps / taps.sum()
    return matrix


def _resize(frames: np.ndarray, size: tuple, weights) -> np.ndarray:
    """[..., H, W, C] float64 resized separably with ``weights(size_in, size_out)``."""
    rows, cols = weights(frames.shape[-3], size[0]), weights(frames.shape[-2], size[1])
    return np.einsum("ih,jw,...hwc->...ijc", rows, cols, frames)


def _videos(seed: int, shape: tuple) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _as_network_input(frames: np.ndarray) -> np.ndarray:
    """[N, T, 224, 224, 3] -> [N, 3, T, 224, 224]."""
    return frames.transpose(0, 4, 1, 2, 3)


STRAIGHT_TO_224 = {  # preset: its value map around torch bilinear straight to 224x224 (same weights for all)
    "tats": lambda x: 2 * _resize(x, (224, 224), _bilinear_weights) / 255 - 1,
    "cd-fvd": lambda x: 2 * _resize(x, (224, 224), _bilinear_weights) / 255 - 1,
    "stylegan-v": lambda x: _resize(x / 255 * 2 - 1, (224, 224), _bilinear_weights),
}


@pytest.mark.parametrize("name", sorted(STRAIGHT_TO_224))
def test_preset_resizes_straight_to_224_with_half_pixel_bilinear_and_maps_to_minus_1_1(name):
    videos = _videos(1, (2, 9, 20, 30, 3))  # upscaling, unequal sides: no crop, aspect ratio dropped
    expected = _as_network_input(STRAIGHT_TO_224[name](videos.astype(np.float64)))
    np.testing.assert_allclose(PROTOCOLS[name].preprocess(videos).numpy(), expected, rtol=0, atol=1e-5)  # torch: float32 source coordinates


def test_cdfvd_loader_is_antialiased_shorter_side_then_centre_crop_truncated_to_uint8():
    """cd-fvd data_utils.preprocess (x/255, antialiased bilinear to shorter side 128 with a ceil longer side,
    centre crop) then fvd.py's ``(batch*255).byte()``: truncation, not rounding."""
    videos = _videos(2, (1, 3, 150, 200, 3))  # shorter side 150 -> 128, longer 200 -> ceil(170.67) = 171
    scaled = _resize(videos.astype(np.float64) / 255, (128, 171), _antialiased_bilinear_weights) * 255
    scaled = scaled[:, :, :, (171 - 128) // 2:(171 - 128) // 2 + 128]
    ours = _cdfvd_loader_frames(torch.from_numpy(videos), 128).numpy()
    assert ours.dtype == np.uint8 and ours.shape == (1, 3, 128, 128, 3)
    clear = np.abs(scaled - np.rint(scaled)) > 5e-3  # torch's float32 weights are off by <= 2.6e-3 (measured)
    assert clear.mean() > 0.98
    np.testing.assert_array_equal(ours[clear], np.floor(scaled[clear]))
    assert np.abs(ours.astype(int) - np.floor(scaled).astype(int)).max() <= 1


def test_cdfvd_folder_presets_run_the_loader_then_the_array_preset():
    videos = _videos(3, (2, 9, 96, 72, 3))  # upscaled by the loader: 72 -> 128 wide, 96 -> ceil(170.67) high
    for size in (128, 256):
        loaded = _cdfvd_loader_frames(torch.from_numpy(videos), size)
        torch.testing.assert_close(PROTOCOLS[f"cd-fvd-{size}"].preprocess(videos),
                                   PROTOCOLS["cd-fvd"].preprocess(loaded), rtol=0, atol=0)
    assert "loader_resolution" not in PROTOCOLS["tats"].describe()  # older presets keep their stats cache keys
    assert PROTOCOLS["cd-fvd-256"].describe()["loader_resolution"] == 256


def _cdfvd_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """cd-fvd's compute_fvd_from_stats on FeatureStats: raw float64 sums, cov = raw/N - mu mu^T, trace of
    sqrtm(sigma_real sigma_fake) as the sum of the square roots of its eigenvalues."""
    def moments(features):
        x = features.astype(np.float32).astype(np.float64)
        mean = x.sum(0) / len(x)
        return mean, x.T @ x / len(x) - np.outer(mean, mean)

    (mu_r, sigma_r), (mu_f, sigma_f) = moments(real), moments(fake)
    root_trace = np.sqrt(np.linalg.eigvals(sigma_r @ sigma_f).real.clip(min=0)).sum()
    return float(np.square(mu_r - mu_f).sum() + np.trace(sigma_f + sigma_r) - 2 * root_trace)


@pytest.mark.parametrize("name", ["cd-fvd", "cd-fvd-128", "stylegan-v"])
def test_biased_covariance_presets_give_the_feature_stats_distance_in_float64(name):
    rng = np.random.default_rng(4)
    mix = rng.standard_normal((24, 24)) / 5
    real = (rng.standard_normal((300, 24)) @ mix).astype(np.float32)
    fake = (rng.standard_normal((200, 24)) @ mix * 1.3 + 0.2).astype(np.float32)
    value, unbiased = (distance(*(FVDStats(metadata={"protocol": protocol, "weights": {"sha256": "0" * 64}})
                                  .update(features) for features in (real, fake))) for protocol in (name, "tats"))
    expected = _cdfvd_distance(real, fake)
    assert isinstance(value, float) and abs(value - expected) <= 1e-9 * expected
    assert abs(unbiased - expected) > 1e-4 * expected  # an N-1 covariance would be told apart


def test_common_metrics_styleganv_resizes_shorter_side_crops_then_maps_minus_half_times_two():
    """JunyaoHu fvd/styleganv/fvd.py: x in [0, 1], bilinear shorter side to 224 (longer side ceil), centre crop, (x - 0.5) * 2."""
    videos = _videos(5, (2, 9, 30, 40, 3))  # shorter side 30 -> 224, longer 40 -> ceil(298.67) = 299
    scaled = _resize(videos.astype(np.float64) / 255, (224, 299), _bilinear_weights)
    expected = (scaled[:, :, :, (299 - 224) // 2:(299 - 224) // 2 + 224] - 0.5) * 2
    ours = PROTOCOLS["common-metrics-styleganv"].preprocess(videos).numpy()
    np.testing.assert_allclose(ours, _as_network_input(expected), rtol=0, atol=1e-5)


def test_common_metrics_styleganv_distance_is_the_unbiased_covariance_one_in_float64():
    rng = np.random.default_rng(6)
    real = rng.standard_normal((120, 16)).astype(np.float32)
    fake = (rng.standard_normal((90, 16)) * 1.2 + 0.1).astype(np.float32)
    value = distance(*(FVDStats(metadata={"protocol": "common-metrics-styleganv", "weights": {"sha256": "0" * 64}})
                       .update(features) for features in (real, fake)))
    (mu_r, mu_f), (sigma_r, sigma_f) = ((x.astype(np.float64).mean(0) for x in (real, fake)),
                                        (np.cov(x.astype(np.float64), rowvar=False) for x in (real, fake)))
    root_trace = np.sqrt(np.linalg.eigvals(sigma_r @ sigma_f).real.clip(min=0)).sum()
    expected = float(np.square(mu_r - mu_f).sum() + np.trace(sigma_r + sigma_f) - 2 * root_trace)
    assert isinstance(value, float) and abs(value - expected) <= 1e-9 * expected
