"""Exact FVD (i3d_convert.fvd): TF-GAN's distance, stats files, the reference
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
from i3d_convert.fvd import FVDStats, frechet_classifier_distance_from_activations, load_stats, save_stats
from i3d_convert.fvd.stats import StatsMismatchError, frechet_distance

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


# --------------------------------------------------------------------------- real weights, end to end


def _gif_frames() -> np.ndarray:
    from realweights import require_gif

    from i3d_convert.io.video_decode import DecodeOptions, decode

    return decode(require_gif(), DecodeOptions(fps=None, resize_mode="none"))


def _motion_sets() -> dict:
    """Windows of the sample GIF (real motion): A plain; B perturbed (noise, blur, frame shuffling);
    C = A downscaled to 128x128 (so the resize to 224 does real work). 4 videos of 16 frames each."""
    frames = _gif_frames()
    rng = np.random.default_rng(0)
    a = np.stack([frames[s:s + 16] for s in (0, 20, 40, 60)])
    b = np.stack([frames[s:s + 16] for s in (10, 30, 50, 63)]).astype(np.float32)
    b[0] += rng.normal(0, 20, b[0].shape)
    b[1] = torch.nn.functional.avg_pool2d(torch.from_numpy(b[1]).permute(0, 3, 1, 2), 5, 1, 2,
                                          count_include_pad=False).permute(0, 2, 3, 1).numpy()
    b[2] = b[2][rng.permutation(16)]
    b[3] = b[3][rng.permutation(16)] + rng.normal(0, 10, b[3].shape)
    b = np.clip(np.rint(b), 0, 255).astype(np.uint8)
    small = torch.nn.functional.interpolate(torch.from_numpy(a.reshape(-1, 224, 224, 3)).permute(0, 3, 1, 2).float(),
                                            size=(128, 128), mode="bilinear", antialias=True, align_corners=False)
    c = small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).reshape(4, 16, 128, 128, 3).numpy()
    return {"A": a, "B": b, "C": c}


@pytest.fixture(scope="module")
def motion_sets():
    return _motion_sets()


@pytest.fixture(scope="module")
def extractor():
    from realweights import require_sdist

    from i3d_convert.fvd import FVDFeatures

    return FVDFeatures("reference", require_sdist(), batch_size=4)


def _tensorflow_fvd_features(variables, videos: np.ndarray) -> np.ndarray:
    """The reference pipeline in TensorFlow: TF1 legacy resize op, 2x/255-1, TF forward (time-mean logits)."""
    import tensorflow as tf

    from i3d_convert.reference.tf_forward import tf_forward

    n, t, h, w, _ = videos.shape
    resized = tf.compat.v1.image.resize_bilinear(tf.constant(videos.reshape(n * t, h, w, 3)), (224, 224),
                                                 align_corners=False, half_pixel_centers=False)
    scaled = (2.0 * tf.cast(resized, tf.float32) / 255.0 - 1.0).numpy().reshape(n, t, 224, 224, 3)
    return tf_forward(variables, scaled, dtype="float32", final_endpoint="Logits")["Logits"]


@pytest.mark.slow
def test_reference_protocol_equals_tensorflow_pipeline_with_tfgan_to_1e5(motion_sets, extractor, tmp_path_factory):
    from realweights import real_checkpoint, tf_variables
    from tfgan import tfgan_fid

    from i3d_convert.fvd import distance, stats_from_videos

    variables = tf_variables(real_checkpoint(tmp_path_factory))
    ours = {k: stats_from_videos(extractor, v) for k, v in motion_sets.items()}
    theirs = {k: _tensorflow_fvd_features(variables, v) for k, v in motion_sets.items()}
    for first, second in (("A", "B"), ("B", "C"), ("A", "C")):
        expected = tfgan_fid(theirs[first], theirs[second])
        value = distance(ours[first], ours[second])
        assert expected.dtype == np.float32 and expected > 1.0
        assert _relative(value, expected) <= 1e-5, (first, second, value, float(expected))


#: FVD of constant -1 vs +1 clips from i3d_convert.reference's TF forward (TF 2.21, CPU, float32 network on the
#: real weights, 1 clip each, time-mean logits, |difference|^2): an independent oracle at more digits than published.
TF221_CONSTANT_CLIP_FVD = {15: 133.90904, 30: 151.39238}


@pytest.mark.slow
@pytest.mark.parametrize("frames,published,published_tolerance", [(15, 131.0, 0.03), (30, 151.39244, 2e-6)],
                         ids=["google-research-example-15f", "junyaohu-tf-30f"])
def test_published_constant_clip_fvd_is_reproduced(extractor, frames, published, published_tolerance):
    """google-research example.py: 16 zero vs 16 all-255 videos, 15 frames, 64x64: "around 131".
    JunyaoHu's README (TF 1.15 script): 8 zero vs 8 one videos of 30 frames, 64x64: 151.39244.
    Every video of a set is the same constant clip, so both covariances are exactly 0 and
    FVD = |mean difference|^2 for any set size: two videos per set give the published sets' value.
    Float32 networks agree to ~1e-6 only (TF 2.21 gives 151.39238, TF in float64 151.39247), so the
    8 published digits hold to 2e-6; "around 131" is what TF itself gives today within 3 %."""
    from i3d_convert.fvd import distance, stats_from_videos

    zeros = np.zeros((2, frames, 64, 64, 3), np.uint8)
    value = distance(stats_from_videos(extractor, zeros), stats_from_videos(extractor, zeros + 255))
    assert _relative(value, TF221_CONSTANT_CLIP_FVD[frames]) <= 1e-5, value
    assert _relative(value, published) <= published_tolerance, value


# --------------------------------------------------------------------------- inputs, CLI, cache, torchrun


def _small_videos(seed: int, n: int = 3, frames: int = 9, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, frames, size, size, 3), dtype=np.uint8)


def test_float_input_in_0_1_is_ambiguous_unless_declared():
    from i3d_convert.fvd.inputs import detect_range, to_0_255

    x = np.random.default_rng(0).random((2, 9, 8, 8, 3)).astype(np.float32)
    with pytest.raises(I3DConvertError, match="input_range='0-1'"):
        detect_range(x)
    assert detect_range(x * 2 - 1) == "-1-1" and detect_range(x * 255) == "0-255"
    np.testing.assert_allclose(to_0_255(x, "0-1"), x * 255, rtol=1e-6)
    with pytest.raises(I3DConvertError, match="outside the declared input_range 0-1"):
        to_0_255(x * 2, "0-1")


@pytest.fixture
def arrays(tmp_path, monkeypatch):
    monkeypatch.setenv("I3D_CONVERT_CACHE", str(tmp_path / "cache"))
    for name, seed in (("a", 1), ("b", 2)):
        np.save(tmp_path / f"{name}.npy", _small_videos(seed))
    np.save(tmp_path / "one.npy", _small_videos(3, n=1))
    np.save(tmp_path / "short.npy", _small_videos(4, frames=8))
    np.save(tmp_path / "unit.npy", np.random.default_rng(5).random((3, 9, 32, 32, 3)).astype(np.float32))
    return tmp_path


@pytest.mark.slow
def test_cli_stats_file_and_json_distance_equal_the_library(arrays, cli):
    from realweights import require_sdist

    from i3d_convert.fvd import fvd

    weights = require_sdist()
    code, out, err = cli("fvd-stats", arrays / "a.npy", "-o", arrays / "a.npz", "--weights", weights, "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == 3
    code, out, err = cli("fvd", arrays / "a.npz", arrays / "b.npy", "--weights", weights, "--json")
    assert code == 0, err
    result = json.loads(out)
    expected = fvd(np.load(arrays / "a.npy"), np.load(arrays / "b.npy"), weights=weights)
    assert result["fvd"] == expected
    assert (result["n_a"], result["n_b"], result["protocol"]) == (3, 3, "reference")
    assert result["weights"]["verified_against"] == "rgb_scratch crc32c" and len(result["weights"]["sha256"]) == 64
    assert result["package_version"]
    cached = sorted((arrays / "cache" / "fvd-stats").glob("*.npz"))
    assert len(cached) == 2  # a and b, keyed by content
    # A damaged cache entry is detected on load, recomputed and rewritten: same answer.
    target = [p for p in cached if load_stats(p).metadata["source"].endswith("b.npy")][0]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    code, out, err = cli("fvd", arrays / "a.npz", arrays / "b.npy", "--weights", weights, "--json")
    assert code == 0 and json.loads(out)["fvd"] == expected
    assert "i3d-convert: warning: " in err and "recomputing" in err  # the CLI prints warnings as one line
    assert load_stats(target).n == 3


@pytest.mark.parametrize("args,message", [
    (("fvd", "one.npy", "a.npy"), "one.npy: FVD needs at least 2 videos"),
    (("fvd", "short.npy", "a.npy"), "short.npy[0]: clips of 8 frames; the FVD network needs at least 9"),
    (("fvd", "unit.npy", "a.npy"), "pass --input-range '0-1'"),
    (("fvd-stats", "a.npy", "-o", "x.npz", "--clip", "middle"), "clip must be one of first, random, all"),
])
def test_cli_bad_input_is_a_one_line_error(arrays, cli, args, message):
    from realweights import require_sdist

    code, out, err = cli(*[arrays / a if a.endswith(".npy") else a for a in args], "--weights", require_sdist())
    assert code == 1
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (arrays / "x.npz").exists()


def test_cli_refuses_stats_of_different_protocols(arrays, cli):
    for name, protocol in (("r", "reference"), ("v", "videogpt")):
        save_stats(FVDStats(metadata={**META, "protocol": protocol}).update(_activations(1, 4, 8)), arrays / f"{name}.npz")
    code, out, err = cli("fvd", arrays / "r.npz", arrays / "v.npz")
    assert code == 1 and "different protocol: reference vs videogpt" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_torchrun_two_ranks_give_the_same_stats_as_one_bit_for_bit(arrays, tmp_path):
    from conftest import REPO_ROOT
    from realweights import require_sdist

    videos = np.concatenate([_small_videos(6, n=3, size=24), _small_videos(7, n=2, size=24)])
    np.save(tmp_path / "five.npy", videos)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    results = {}
    for ranks in (1, 2):
        out = tmp_path / f"stats{ranks}.npz"
        args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "--no-python",
                sys.executable, "-m", "i3d_convert.cli.app", "fvd-stats", str(tmp_path / "five.npy"), "-o", str(out),
                "--weights", str(require_sdist()), "--batch-size", "2", "--device", "cpu", "--no-cache"]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[ranks] = load_stats(out)
    one, two = results[1], results[2]
    assert one.n == two.n == 5
    for name in ("shift", "shifted_sum", "shifted_sum_outer"):
        assert np.array_equal(getattr(one, name), getattr(two, name)), name


@pytest.mark.slow
def test_metric_object_updated_in_pieces_and_merged_equals_fvd(extractor):
    from i3d_convert.fvd import FVDMetric, fvd

    a, b = _small_videos(11, n=4), _small_videos(12, n=4)
    expected = fvd(a, b, weights=extractor_weights())
    left, right = FVDMetric(extractor=extractor), FVDMetric(extractor=extractor)
    left.update(a[:2], real=True)
    right.update(a[2:], real=True)
    left.update(b[:3], real=False)
    right.update(b[3:], real=False)
    merged = left.merge(right).compute()
    assert (left.real.n, left.fake.n) == (4, 4)
    assert _relative(merged, expected) <= 1e-6
    left.reset()
    assert (left.real.n, left.fake.n) == (0, 0)


def extractor_weights():
    from realweights import require_sdist

    return require_sdist()


@pytest.mark.slow
def test_stats_of_a_folder_of_lossless_videos_equal_stats_of_the_same_frames(tmp_path, monkeypatch, cli):
    """Decoding is part of the pipeline: a folder of losslessly encoded videos gives the array's stats."""
    from i3d_convert.io.video_write import write_test_video

    monkeypatch.setenv("I3D_CONVERT_CACHE", str(tmp_path / "cache"))
    videos = _small_videos(21, n=3, frames=10, size=48)
    (tmp_path / "folder").mkdir()
    for i, video in enumerate(videos):
        write_test_video(tmp_path / "folder" / f"v{i}.mkv", video, fps=25, codec="ffv1", lossless=True)
    np.save(tmp_path / "videos.npy", videos)
    weights = extractor_weights()
    for source, out in ((tmp_path / "folder", "folder.npz"), (tmp_path / "videos.npy", "array.npz")):
        code, _, err = cli("fvd-stats", source, "-o", tmp_path / out, "--weights", weights, "--no-cache")
        assert code == 0, err
    folder, array = load_stats(tmp_path / "folder.npz"), load_stats(tmp_path / "array.npz")
    assert folder.n == array.n == 3
    np.testing.assert_array_equal(folder.mean, array.mean)
    np.testing.assert_array_equal(folder.cov(), array.cov())


@pytest.mark.slow
def test_cli_protocol_num_videos_and_input_range_reach_the_library(arrays, cli):
    """``--protocol videogpt --num-videos 2 --input-range 0-1`` on float videos in [0, 1] equals the library
    on the first two videos scaled to [0, 255] with that protocol."""
    from realweights import require_sdist

    from i3d_convert.fvd import fvd

    weights = require_sdist()
    a, b = np.load(arrays / "a.npy"), np.load(arrays / "b.npy")
    np.save(arrays / "a01.npy", (a / 255.0).astype(np.float64))
    np.save(arrays / "b01.npy", (b / 255.0).astype(np.float64))
    code, out, err = cli("fvd", arrays / "a01.npy", arrays / "b01.npy", "--weights", weights, "--protocol", "videogpt",
                         "--num-videos", "2", "--input-range", "0-1", "--no-cache", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["n_a"], result["n_b"], result["protocol"]) == (2, 2, "videogpt")
    expected = fvd(a[:2], b[:2], protocol="videogpt", weights=weights)
    assert _relative(result["fvd"], expected) <= 1e-5
    code, out, err = cli("fvd-stats", arrays / "b.npy", "-o", arrays / "b2.npz", "--weights", weights,
                         "--protocol", "tats", "--num-videos", "2", "--input-range", "0-255", "--json")
    assert code == 0, err
    assert load_stats(arrays / "b2.npz").n == 2 and load_stats(arrays / "b2.npz").metadata["protocol"] == "tats"


def test_cli_compile_pools_reaches_the_fvd_network_of_fvd_stats_and_fvd(arrays, cli, monkeypatch):
    from realweights import require_sdist

    from i3d_convert.models.i3d import InceptionI3d

    weights = require_sdist()
    compiled = []
    monkeypatch.setattr(InceptionI3d, "compile_max_pools", lambda self, enabled=True: compiled.append(enabled) or 13)
    code, out, err = cli("fvd-stats", arrays / "a.npy", "-o", arrays / "c.npz", "--weights", weights, "--no-cache",
                         "--compile-pools")
    assert code == 0, err
    assert compiled == [True]
    code, out, err = cli("fvd", arrays / "c.npz", arrays / "b.npy", "--weights", weights, "--no-cache", "--compile-pools")
    assert code == 0, err
    assert compiled == [True, True]  # b's network; c.npz is a stats file
