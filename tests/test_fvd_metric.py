"""Exact FVD (i3d_convert.integrations.fvd_metric): TF-GAN's distance, stats files, the reference
pipeline end to end against an independent TensorFlow pipeline, published figures, the CLI, torchrun.

TF-GAN's own ``frechet_classifier_distance_from_activations`` (tensorflow-gan 2.1.0, loaded by
tests/tfgan.py) is the oracle for the distance; TF1's ``resize_bilinear``, the TF forward pass of
``i3d_convert.reference`` on the real weights and TF-GAN are the oracle for the pipeline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from i3d_convert.errors import I3DConvertError
from i3d_convert.integrations.fvd_metric import FVDStats, frechet_classifier_distance_from_activations, load_stats, save_stats
from i3d_convert.integrations.fvd_metric.stats import StatsMismatchError, frechet_distance

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
META = {"protocol": "reference", "weights": {"sha256": "0" * 64}}


def _activations(seed: int, n: int, d: int, scale: float = 1.0, mean: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ mix * scale + mean


def _relative(value, expected) -> float:
    return abs(float(value) - float(expected)) / abs(float(expected))


CASES = {
    "random N=64 D=400": (_activations(1, 64, 400), _activations(2, 64, 400, mean=0.3)),
    "random N=500 D=32": (_activations(3, 500, 32), _activations(4, 500, 32, scale=1.5)),
    "rank-deficient N=10 D=400": (_activations(5, 10, 400), _activations(6, 10, 400, mean=0.1)),
    "unequal N 64 vs 100": (_activations(7, 64, 400), _activations(8, 100, 400)),
    "N < D, shifted means": (_activations(9, 200, 256, mean=5.0), _activations(10, 120, 256, mean=4.0)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_frechet_distance_equals_tfgan_to_1e9(case):
    from tfgan import tfgan_fid

    a, b = CASES[case]
    expected = tfgan_fid(a, b)
    ours = frechet_classifier_distance_from_activations(a, b)
    assert _relative(ours, expected) <= 1e-9, (case, float(ours), float(expected))
    stats = frechet_distance(FVDStats(metadata=META).update(a[:7]).update(a[7:]), FVDStats(metadata=META).update(b))
    assert _relative(stats, expected) <= 1e-9


def test_float32_activations_give_tfgans_float32_value_bit_for_bit():
    from tfgan import tfgan_fid

    a, b = (x.astype(np.float32) for x in CASES["random N=64 D=400"])
    expected = tfgan_fid(a, b)
    ours = frechet_classifier_distance_from_activations(a, b)
    assert ours.dtype == np.float32 and expected.dtype == np.float32
    assert ours == expected


def test_stats_merge_equals_one_pass_over_all_features_with_a_large_mean():
    x = _activations(11, 300, 50, mean=1000.0)
    whole = FVDStats(metadata=META).update(x)
    parts = FVDStats(metadata=META).update(x[:40]).merge(FVDStats(metadata=META).update(x[40:200] + 0)).merge(
        FVDStats(metadata=META).update(x[200:]))
    np.testing.assert_allclose(parts.mean, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(parts.cov(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(parts.cov(), whole.cov(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(parts.cov(0), np.cov(x, rowvar=False, bias=True), rtol=1e-9, atol=1e-12)
    assert parts.n == 300


def test_merging_stats_of_another_protocol_or_weights_is_refused():
    a = FVDStats(metadata=META).update(_activations(1, 4, 8))
    other = FVDStats(metadata={**META, "protocol": "videogpt"}).update(_activations(2, 4, 8))
    with pytest.raises(StatsMismatchError, match="different protocol"):
        a.merge(other)
    with pytest.raises(StatsMismatchError, match="different weights"):
        frechet_distance(a, FVDStats(metadata={**META, "weights": {"sha256": "1" * 64}}).update(_activations(2, 4, 8)))


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_stats_file_round_trips_exactly_with_its_metadata(tmp_path, suffix):
    stats = FVDStats(metadata={**META, "frames": 16, "source_resolutions": ["64x64"]}).update(_activations(3, 20, 16, mean=3))
    path = save_stats(stats, tmp_path / f"s{suffix}")
    loaded = load_stats(path)
    assert loaded.n == 20 and loaded.metadata["frames"] == 16 and loaded.metadata["protocol"] == "reference"
    assert loaded.metadata["package_version"]
    for name in ("shift", "shifted_sum", "shifted_sum_outer"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(stats, name))
    assert [p.name for p in tmp_path.iterdir()] == [f"s{suffix}"]  # no temporaries left
    with pytest.raises(I3DConvertError, match="output exists"):
        save_stats(stats, path)


def test_altered_stats_file_is_refused_on_load(tmp_path):
    path = save_stats(FVDStats(metadata=META).update(_activations(3, 20, 16)), tmp_path / "s.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["shifted_sum"][0] += 1e-9
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(I3DConvertError, match="sha256"):
        load_stats(tmp_path / "bad.npz")
    (tmp_path / "trunc.npz").write_bytes(path.read_bytes()[:300])
    with pytest.raises(I3DConvertError, match="trunc.npz"):
        load_stats(tmp_path / "trunc.npz")
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(I3DConvertError, match="not an FVD stats file"):
        load_stats(tmp_path / "plain.npz")


def test_a_failed_write_leaves_nothing(tmp_path):
    empty = FVDStats(metadata=META)
    with pytest.raises(I3DConvertError, match="no videos"):
        save_stats(empty, tmp_path / "s.npz")
    assert list(tmp_path.iterdir()) == []
